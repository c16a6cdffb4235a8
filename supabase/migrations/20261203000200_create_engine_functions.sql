-- The engine's state changes. Each is one function, one transaction, executable by
-- service_role only (grants in the row_level_security migration). Transports call them by name
-- with named arguments: psycopg (`select * from public.claim_signals(p_worker_id => ...)`)
-- or PostgREST RPC (`POST /rest/v1/rpc/claim_signals`). All that write are VOLATILE, since
-- PostgREST runs STABLE functions in read-only transactions.
--
-- Errors: SQLSTATE PT409 means "this worker no longer holds the signal" (PostgREST answers
-- HTTP 409); the engine stops working on it. Clock-dependent functions take `p_now` so tests
-- control time; it defaults to the server clock.

-- ============================================================================
-- claim_signals: take up to p_limit signals this worker may start now.
-- ============================================================================
-- sync/fyi signals need no queue order. A run signal is claimable only when it is the oldest
-- pending signal (lowest seq) of an active agent that has no run signal processing. The agent
-- row, locked FOR NO KEY UPDATE SKIP LOCKED, is the queue's mutex: two claimers never examine
-- one queue at once, and each check after the lock sees the latest committed state.
--
-- Claiming a run signal also opens its runtime session (running, linked from the signal), so
-- a watcher sees the run start the moment it is claimed, and the engine spends no second
-- round trip and no second write of the signal row on it.
--
-- Cost: the queues' heads are found by a loose index scan over signals_pending_runs_idx (two
-- index probes per agent with pending runs), never by reading every pending signal, so a claim
-- costs the same with ten signals waiting or a million.
create or replace function public.claim_signals(
  p_worker_id text,
  p_limit integer default 10,
  p_lease_seconds integer default 30,
  p_now timestamptz default null
)
returns setof public.signals
language plpgsql volatile
set search_path = ''
as $$
declare
  v_now timestamptz := coalesce(p_now, clock_timestamp());
  v_lease_until timestamptz := coalesce(p_now, clock_timestamp()) + make_interval(secs => p_lease_seconds);
  v_claimed integer := 0;
  v_agent_id uuid;
  v_head_id uuid;
  v_session_id uuid;
  v_signal public.signals;
begin
  -- GUARD
  if p_worker_id is null or btrim(p_worker_id) = '' then
    raise exception 'claim_signals needs a worker id' using errcode = 'invalid_parameter_value';
  end if;
  if p_limit is null or p_limit < 1 or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'claim_signals needs p_limit >= 1 and p_lease_seconds >= 1 (got %, %)',
      p_limit, p_lease_seconds using errcode = 'invalid_parameter_value';
  end if;

  -- MUTATE: signals outside any agent queue
  for v_signal in
    update public.signals s
       set status = 'processing', worker_id = p_worker_id, lease_expires_at = v_lease_until,
           attempts = s.attempts + 1, claimed_at = v_now
     where s.id in (select p.id from public.signals p
                     where p.status = 'pending' and p.type <> 'run'
                     order by p.seq
                     limit p_limit
                       for update skip locked)
    returning s.*
  loop
    v_claimed := v_claimed + 1;
    return next v_signal;
  end loop;
  if v_claimed >= p_limit then
    return;
  end if;

  -- LOCK each ready queue, oldest head first, then MUTATE its head
  for v_agent_id in
    with recursive queued (agent_id) as (
      (select p.agent_id from public.signals p
        where p.status = 'pending' and p.type = 'run'
        order by p.agent_id
        limit 1)
      union all
      select (select p.agent_id from public.signals p
               where p.status = 'pending' and p.type = 'run' and p.agent_id > q.agent_id
               order by p.agent_id
               limit 1)
        from queued q
       where q.agent_id is not null
    )
    select a.id
      from queued q
      join public.agents a on a.id = q.agent_id
     where a.is_active
       and not exists (select 1 from public.signals b
                        where b.agent_id = a.id and b.status = 'processing' and b.type = 'run')
     order by (select min(p.seq) from public.signals p
                where p.agent_id = a.id and p.status = 'pending' and p.type = 'run')
       for no key update of a skip locked
  loop
    -- Re-check under the lock: a claimer that held it a moment ago may have taken this head.
    continue when exists (select 1 from public.signals b
                           where b.agent_id = v_agent_id and b.status = 'processing' and b.type = 'run');
    select p.id into v_head_id
      from public.signals p
     where p.agent_id = v_agent_id and p.status = 'pending' and p.type = 'run'
     order by p.seq
     limit 1
       for update;
    continue when v_head_id is null;

    -- Sessions are numbered by run, not by claim: a release refunds the claim's attempt, yet
    -- the run it interrupted keeps its session.
    insert into public.runtime_sessions (signal_id, agent_id, started_at, status, attempt, worker_id)
    values (v_head_id, v_agent_id, v_now, 'running',
            (select coalesce(max(r.attempt), 0) + 1
               from public.runtime_sessions r where r.signal_id = v_head_id),
            p_worker_id)
    returning id into v_session_id;

    update public.signals s
       set status = 'processing', worker_id = p_worker_id, lease_expires_at = v_lease_until,
           attempts = s.attempts + 1, claimed_at = v_now, runtime_session_id = v_session_id
     where s.id = v_head_id
    returning s.* into v_signal;
    v_claimed := v_claimed + 1;
    return next v_signal;
    exit when v_claimed >= p_limit;
  end loop;
end
$$;

-- ============================================================================
-- renew_leases: extend the leases this worker still holds; returns the ids it holds.
-- ============================================================================
-- An id missing from the result was reclaimed or finished elsewhere: the worker must stop
-- working on it.
create or replace function public.renew_leases(
  p_worker_id text,
  p_signal_ids uuid[],
  p_lease_seconds integer default 30,
  p_now timestamptz default null
)
returns setof uuid
language sql volatile
set search_path = ''
as $$
  update public.signals s
     set lease_expires_at = coalesce(p_now, clock_timestamp()) + make_interval(secs => p_lease_seconds)
   where s.id = any (p_signal_ids)
     and s.status = 'processing'
     and s.worker_id = p_worker_id
  returning s.id
$$;

-- ============================================================================
-- Internal: lock a signal this worker must hold, or raise PT409.
-- ============================================================================
create or replace function public.lock_held_signal(p_signal_id uuid, p_worker_id text)
returns public.signals
language plpgsql volatile
set search_path = ''
as $$
declare
  v_signal public.signals;
begin
  select * into v_signal from public.signals where id = p_signal_id for update;
  if not found then
    raise exception 'signal % does not exist', p_signal_id
      using errcode = 'PT404', hint = 'It may have been deleted together with its agent.';
  end if;
  if v_signal.status <> 'processing' or v_signal.worker_id is distinct from p_worker_id then
    raise exception 'worker % no longer holds signal % (status %, worker %)',
      p_worker_id, p_signal_id, v_signal.status, coalesce(v_signal.worker_id, 'none')
      using errcode = 'PT409',
            hint = 'Its lease expired and it was reclaimed, or it was released; stop working on it.';
  end if;
  return v_signal;
end
$$;

-- ============================================================================
-- Internal: end a held signal (the caller locked it) and its running session.
-- ============================================================================
-- p_error null → signal complete (session success, with p_output); otherwise signal and
-- session error with that message. Ending a sync signal bumps the engine config epoch so
-- every engine reloads agent definitions.
create or replace function public.end_signal(
  p_signal public.signals,
  p_error text,
  p_output jsonb,
  p_now timestamptz
)
returns public.signals
language plpgsql volatile
set search_path = ''
as $$
declare
  v_signal public.signals;
begin
  if p_signal.runtime_session_id is not null then
    update public.runtime_sessions
       set status = case when p_error is null then 'success' else 'error' end,
           error = p_error,
           output = case when p_error is null then p_output end,
           completed_at = p_now
     where id = p_signal.runtime_session_id and status = 'running';
  end if;

  if p_signal.type = 'sync' and p_error is null then
    update public.engine_config set epoch = epoch + 1;
    perform pg_notify('portico_config', '');
  end if;

  update public.signals
     set status = case when p_error is null then 'complete' else 'error' end,
         error = p_error,
         completed_at = p_now,
         lease_expires_at = null
   where id = p_signal.id
  returning * into v_signal;
  return v_signal;
end
$$;

-- ============================================================================
-- record_step_result: write one finished step of a running session.
-- ============================================================================
-- With p_finish (the engine passes it for the last step, and for a failing one, which halts
-- the run) the same transaction also ends the run: complete with p_output as the session's
-- output, or, when the step failed, error with a message naming the step and the cause. So a
-- watcher never sees every step done and the session still running, and the engine spends
-- one round trip, not two.
create or replace function public.record_step_result(
  p_session_id uuid,
  p_worker_id text,
  p_position integer,
  p_step_id uuid,
  p_step_name text,
  p_step_type text,
  p_input jsonb,
  p_output jsonb,
  p_error text,
  p_started_at timestamptz,
  p_completed_at timestamptz,
  p_logs text default '',
  p_metadata jsonb default '{}'::jsonb,
  p_finish boolean default false
)
returns public.step_results
language plpgsql volatile
set search_path = ''
as $$
declare
  v_session public.runtime_sessions;
  v_signal public.signals;
  v_result public.step_results;
begin
  -- GUARD: the session is running and its signal is still ours.
  select * into v_session from public.runtime_sessions where id = p_session_id;
  if not found then
    raise exception 'runtime session % does not exist', p_session_id using errcode = 'PT404';
  end if;
  v_signal := public.lock_held_signal(v_session.signal_id, p_worker_id);
  if v_session.status <> 'running' then
    raise exception 'runtime session % is already %', p_session_id, v_session.status
      using errcode = 'PT409', hint = 'Its signal was reclaimed or released; stop working on it.';
  end if;

  -- MUTATE
  insert into public.step_results (
    session_id, step_id, position, step_name, step_type, status, started_at, completed_at,
    duration_ms, input, output, error, logs, metadata)
  values (
    p_session_id, p_step_id, p_position, p_step_name, p_step_type,
    case when p_error is null then 'success' else 'error' end,
    p_started_at, p_completed_at,
    round(extract(epoch from (p_completed_at - p_started_at)) * 1000)::integer,
    p_input, case when p_error is null then p_output end, p_error,
    coalesce(p_logs, ''), coalesce(p_metadata, '{}'::jsonb))
  returning * into v_result;

  if p_finish then
    -- Steps run in order, one result each: this step's number in the run is the count of
    -- results so far (positions need not be 0, 1, 2, …).
    perform public.end_signal(
      v_signal,
      case when p_error is not null then
        format('step %s "%s" (%s) failed: %s',
               (select count(*) from public.step_results r where r.session_id = p_session_id),
               p_step_name, p_step_type, p_error)
      end,
      p_output,
      clock_timestamp());
  end if;
  return v_result;
end
$$;

-- ============================================================================
-- finish_signal: end a claimed signal, and its running session if it has one.
-- ============================================================================
-- For sync and fyi signals, for runs of agents without steps, and for runs that end before a
-- step (their agent was deleted): see end_signal for what p_error and p_output mean.
create or replace function public.finish_signal(
  p_signal_id uuid,
  p_worker_id text,
  p_error text default null,
  p_output jsonb default null,
  p_now timestamptz default null
)
returns public.signals
language sql volatile
set search_path = ''
as $$
  select public.end_signal(public.lock_held_signal(p_signal_id, p_worker_id), p_error, p_output,
                           coalesce(p_now, clock_timestamp()))
$$;

-- ============================================================================
-- Internal: return a held signal to its queue (or end it), closing its running session.
-- ============================================================================
create or replace function public.return_signal(
  p_signal public.signals,
  p_session_error text,
  p_final_error text,
  p_refund_attempt boolean,
  p_now timestamptz
)
returns text
language plpgsql volatile
set search_path = ''
as $$
begin
  if p_signal.runtime_session_id is not null then
    update public.runtime_sessions
       set status = 'error', error = p_session_error, completed_at = p_now
     where id = p_signal.runtime_session_id and status = 'running';
  end if;

  if p_final_error is not null then
    update public.signals
       set status = 'error', error = p_final_error, completed_at = p_now, lease_expires_at = null
     where id = p_signal.id;
    return 'error';
  end if;

  perform set_config('portico.lease_return', 'on', true);
  update public.signals
     set status = 'pending', lease_expires_at = null, claimed_at = null,
         attempts = case when p_refund_attempt then greatest(attempts - 1, 0) else attempts end
   where id = p_signal.id;
  perform set_config('portico.lease_return', 'off', true);
  return 'pending';
end
$$;

-- ============================================================================
-- release_signals: a stopping worker hands back what it could not finish.
-- ============================================================================
-- The claim attempt is refunded (a graceful stop is not a failure); another worker can take
-- the signals at once, in queue order.
create or replace function public.release_signals(
  p_worker_id text,
  p_signal_ids uuid[],
  p_now timestamptz default null
)
returns setof uuid
language plpgsql volatile
set search_path = ''
as $$
declare
  v_now timestamptz := coalesce(p_now, clock_timestamp());
  v_signal public.signals;
begin
  for v_signal in
    select * from public.signals
     where id = any (p_signal_ids) and status = 'processing' and worker_id = p_worker_id
     order by seq
       for update
  loop
    perform public.return_signal(
      v_signal,
      format('worker %s stopped before this run finished; the signal went back to its queue',
             p_worker_id),
      null, true, v_now);
    return next v_signal.id;
  end loop;
end
$$;

-- ============================================================================
-- reclaim_expired_leases: requeue signals whose worker stopped renewing its lease.
-- ============================================================================
-- After p_max_attempts claims the signal ends in error instead, saying so.
create or replace function public.reclaim_expired_leases(
  p_max_attempts integer default 3,
  p_now timestamptz default null
)
returns table (signal_id uuid, outcome text)
language plpgsql volatile
set search_path = ''
as $$
declare
  v_now timestamptz := coalesce(p_now, clock_timestamp());
  v_signal public.signals;
begin
  for v_signal in
    select * from public.signals
     where status = 'processing' and lease_expires_at < v_now
     order by seq
       for update skip locked
  loop
    signal_id := v_signal.id;
    outcome := public.return_signal(
      v_signal,
      format('worker %s stopped renewing its lease during attempt %s', v_signal.worker_id, v_signal.attempts),
      case when v_signal.attempts >= p_max_attempts then
        format('gave up after %s attempts: each time, the worker running it stopped renewing its lease '
               '(last worker: %s). Look for a crash or an out-of-memory kill in that worker''s logs, '
               'then send the signal again.', v_signal.attempts, v_signal.worker_id)
      end,
      false, v_now);
    return next;
  end loop;
end
$$;

-- ============================================================================
-- Reads the engine needs (STABLE: PostgREST may run them read-only).
-- ============================================================================
create or replace function public.config_epoch()
returns bigint
language sql stable
set search_path = ''
as $$
  select epoch from public.engine_config
$$;

-- An agent with its steps in position order, as one JSON document; null if it does not exist.
create or replace function public.agent_definition(p_agent_id uuid)
returns jsonb
language sql stable
set search_path = ''
as $$
  select to_jsonb(a) || jsonb_build_object('steps', coalesce(
           (select jsonb_agg(to_jsonb(s) order by s.position)
              from public.steps s where s.agent_id = a.id), '[]'::jsonb))
    from public.agents a
   where a.id = p_agent_id
$$;

-- A signal with its latest session and that session's step results, as one JSON document.
create or replace function public.signal_report(p_signal_id uuid)
returns jsonb
language sql stable
set search_path = ''
as $$
  select to_jsonb(s) || jsonb_build_object(
           'agent_name', (select a.name from public.agents a where a.id = s.agent_id),
           'session', (select to_jsonb(r) || jsonb_build_object('step_results', coalesce(
                                (select jsonb_agg(to_jsonb(x) order by x.position)
                                   from public.step_results x where x.session_id = r.id),
                                '[]'::jsonb))
                         from public.runtime_sessions r where r.id = s.runtime_session_id))
    from public.signals s
   where s.id = p_signal_id
$$;

-- ============================================================================
-- apply_agent: upsert an agent by (owner, name) and replace its steps, in one transaction.
-- ============================================================================
-- p_definition: {"name", "description"?, "is_active"?, "owner_id"?, "steps": [{"name",
-- "type", "config"}, ...]}. Step positions follow list order. Returns the agent's id.
create or replace function public.apply_agent(p_definition jsonb)
returns uuid
language plpgsql volatile
set search_path = ''
as $$
declare
  v_owner uuid := nullif(p_definition ->> 'owner_id', '')::uuid;
  v_agent_id uuid;
  v_step jsonb;
  v_position integer := 0;
begin
  if jsonb_typeof(p_definition -> 'steps') is distinct from 'array' then
    raise exception 'agent "%": steps must be a list of {name, type, config}', p_definition ->> 'name'
      using errcode = 'invalid_parameter_value';
  end if;

  insert into public.agents (name, description, is_active, owner_id)
  values (p_definition ->> 'name',
          coalesce(p_definition ->> 'description', ''),
          coalesce((p_definition ->> 'is_active')::boolean, true),
          v_owner)
  on conflict on constraint agents_name_unique_per_owner do update
     set description = excluded.description, is_active = excluded.is_active
  returning id into v_agent_id;

  delete from public.steps where agent_id = v_agent_id;
  for v_step in select * from jsonb_array_elements(p_definition -> 'steps')
  loop
    insert into public.steps (agent_id, name, type, config, position)
    values (v_agent_id, v_step ->> 'name', v_step ->> 'type',
            coalesce(v_step -> 'config', '{}'::jsonb), v_position);
    v_position := v_position + 1;
  end loop;

  return v_agent_id;
end
$$;
