-- Portico tables: agents, steps, signals, runtime_sessions, step_results.
-- Names, fields and value sets follow the seed's data models; additions are marked "added".
-- Statuses are text with named checks (easier to evolve than enums); each status is
-- documented where it is declared, with who moves a row out of it.

create extension if not exists moddatetime with schema extensions;

-- ============================================================================
-- agents
-- ============================================================================
create table public.agents (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  description text not null default '',
  is_active boolean not null default true,
  -- null: a shared agent every signed-in user may read and signal; only service_role changes it.
  owner_id uuid default auth.uid() references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint agents_name_not_blank check (name ~ '[^[:space:]]'),
  -- `portico agents apply` upserts by name, so a name is unique per owner (and among shared agents).
  -- Its index leads with owner_id, so it also serves the foreign key.
  constraint agents_name_unique_per_owner unique nulls not distinct (owner_id, name)
);
comment on table public.agents is
  'An automation workflow: an ordered list of steps with its own FIFO queue of signals.';
comment on column public.agents.is_active is
  'Inactive agents keep their pending signals, in order; they run when the agent is active again.';

-- ============================================================================
-- steps
-- ============================================================================
create table public.steps (
  id uuid primary key default gen_random_uuid(),
  agent_id uuid not null references public.agents (id) on delete cascade,
  name text not null,
  type text not null,
  config jsonb not null default '{}'::jsonb,
  position integer not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint steps_type_valid check (type in ('python', 'llm')),
  constraint steps_name_not_blank check (name ~ '[^[:space:]]'),
  constraint steps_position_not_negative check (position >= 0),
  -- Deferrable so that a client can swap two positions inside one transaction.
  -- Its index leads with agent_id, so it also serves the foreign key.
  constraint steps_one_per_position unique (agent_id, position) deferrable initially immediate
);

-- Every problem with a step config, as sentences; null when the config fits its type.
-- Python: {code, timeout_ms?}. LLM: {prompt_template, model, temperature?, max_tokens?,
-- system?, response_format?, timeout_ms?, api_base?}. Unknown keys are refused by name.
create or replace function public.step_config_problems(p_type text, p_config jsonb)
returns text[]
language plpgsql immutable
set search_path = ''
as $$
declare
  v_allowed text[];
  v_unknown text[];
  v_problems text[] := '{}';
begin
  -- An unknown type is steps_type_valid's to refuse; its config has no shape to check.
  if p_type is null or p_type not in ('python', 'llm') then
    return null;
  end if;
  if p_config is null or jsonb_typeof(p_config) <> 'object' then
    return array['config must be a JSON object'];
  end if;

  v_allowed := case p_type
    when 'python' then array['code', 'timeout_ms']
    else array['prompt_template', 'model', 'temperature', 'max_tokens', 'system',
               'response_format', 'timeout_ms', 'api_base']
  end;
  select array_agg(k order by k) into v_unknown
    from jsonb_object_keys(p_config) as k
   where k <> all (v_allowed);
  if v_unknown is not null then
    v_problems := v_problems || format('unknown config keys: %s (%s steps accept: %s)',
      array_to_string(v_unknown, ', '), p_type, array_to_string(v_allowed, ', '));
  end if;

  if p_config ? 'timeout_ms' and not (
       jsonb_typeof(p_config -> 'timeout_ms') = 'number'
       and (p_config ->> 'timeout_ms')::numeric > 0
       and (p_config ->> 'timeout_ms')::numeric = trunc((p_config ->> 'timeout_ms')::numeric)) then
    v_problems := v_problems || 'config.timeout_ms must be a whole number of milliseconds greater than 0'::text;
  end if;

  if p_type = 'python' then
    if jsonb_typeof(p_config -> 'code') is distinct from 'string'
       or (p_config ->> 'code') !~ '[^[:space:]]' then
      v_problems := v_problems || 'config.code must be a non-empty string of Python'::text;
    end if;
  elsif p_type = 'llm' then
    if jsonb_typeof(p_config -> 'prompt_template') is distinct from 'string'
       or (p_config ->> 'prompt_template') !~ '[^[:space:]]' then
      v_problems := v_problems || 'config.prompt_template must be a non-empty string'::text;
    end if;
    if jsonb_typeof(p_config -> 'model') is distinct from 'string'
       or (p_config ->> 'model') !~ '[^[:space:]]' then
      v_problems := v_problems || 'config.model must be a non-empty model name such as "openai/gpt-4o-mini"'::text;
    end if;
    if p_config ? 'temperature' and not (
         jsonb_typeof(p_config -> 'temperature') = 'number'
         and (p_config ->> 'temperature')::numeric between 0 and 1) then
      v_problems := v_problems || 'config.temperature must be a number from 0 to 1'::text;
    end if;
    if p_config ? 'max_tokens' and not (
         jsonb_typeof(p_config -> 'max_tokens') = 'number'
         and (p_config ->> 'max_tokens')::numeric > 0
         and (p_config ->> 'max_tokens')::numeric = trunc((p_config ->> 'max_tokens')::numeric)) then
      v_problems := v_problems || 'config.max_tokens must be a whole number greater than 0'::text;
    end if;
    if p_config ? 'system' and jsonb_typeof(p_config -> 'system') <> 'string' then
      v_problems := v_problems || 'config.system must be a string'::text;
    end if;
    if p_config ? 'response_format'
       and coalesce(p_config ->> 'response_format', '') not in ('text', 'json') then
      v_problems := v_problems || 'config.response_format must be "text" or "json"'::text;
    end if;
    if p_config ? 'api_base' and not (
         jsonb_typeof(p_config -> 'api_base') = 'string'
         and (p_config ->> 'api_base') ~ '^https?://[^\s]+$') then
      v_problems := v_problems || 'config.api_base must be an http:// or https:// URL'::text;
    end if;
  end if;

  return nullif(v_problems, '{}');
end
$$;

-- The check is the backstop (it holds even with triggers disabled); the trigger below
-- raises first with the sentences a person can act on.
alter table public.steps
  add constraint steps_config_valid check (public.step_config_problems(type, config) is null);

create or replace function public.steps_check_config()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_problems text[] := public.step_config_problems(new.type, new.config);
begin
  if new.type in ('python', 'llm') and v_problems is not null then
    raise exception 'step "%" (%): %', new.name, new.type, array_to_string(v_problems, '; ')
      using errcode = 'check_violation',
            constraint = 'steps_config_valid',
            hint = 'python steps take {"code": "...", "timeout_ms": 1000}; llm steps take '
                   '{"prompt_template": "...", "model": "...", "temperature": 0.2, "max_tokens": 256}.';
  end if;
  return new;
end
$$;

create trigger steps_check_config
  before insert or update of type, config, name on public.steps
  for each row execute function public.steps_check_config();

-- ============================================================================
-- signals
-- ============================================================================
-- status: pending    → created; waiting in its agent's queue. The engine's claim moves it on.
--         processing → claimed by a worker holding a lease. The worker finishes it; lease
--                      reclaim or release returns it to pending (or ends it in error).
--         complete   → terminal: the run (or sync/fyi handling) succeeded.
--         error      → terminal: `error` says why.
create table public.signals (
  id uuid primary key default gen_random_uuid(),
  -- added: FIFO order within an agent's queue comes from this sequence, never from created_at.
  seq bigint generated always as identity,
  type text not null,
  payload jsonb not null default '{}'::jsonb,
  agent_id uuid references public.agents (id) on delete cascade,
  status text not null default 'pending',
  error text,
  runtime_session_id uuid,
  -- added: who inserted it (lets a user read their own signals under RLS).
  created_by uuid default auth.uid(),
  -- added: lease bookkeeping, written only by the engine's functions.
  attempts integer not null default 0,
  worker_id text,
  lease_expires_at timestamptz,
  claimed_at timestamptz,
  completed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint signals_seq_unique unique (seq),
  constraint signals_type_valid check (type in ('run', 'sync', 'fyi')),
  constraint signals_status_valid check (status in ('pending', 'processing', 'complete', 'error')),
  constraint signals_run_requires_agent check (type <> 'run' or agent_id is not null),
  constraint signals_error_iff_status_error check ((status = 'error') = (error is not null)),
  constraint signals_lease_iff_processing
    check ((status = 'processing') = (lease_expires_at is not null and worker_id is not null)),
  constraint signals_completed_at_iff_terminal
    check ((status in ('complete', 'error')) = (completed_at is not null)),
  constraint signals_attempts_not_negative check (attempts >= 0),
  -- Realtime drops change events over 1 MiB; refuse the payload at the door instead.
  constraint signals_payload_size check (pg_column_size(payload) <= 1048576)
);
comment on column public.signals.seq is
  'Monotonic insertion order; each agent''s queue runs in this order.';

create index signals_agent_id_idx on public.signals (agent_id);
create index signals_status_idx on public.signals (status);
create index signals_created_by_idx on public.signals (created_by);
-- The claim finds the agents with pending runs and each queue's head here, by index probes
-- per agent, so its cost does not grow with the length of the queues.
create index signals_pending_runs_idx on public.signals (agent_id, seq)
  where status = 'pending' and type = 'run';
-- sync and fyi signals belong to no queue; the claim takes them oldest first.
create index signals_pending_untargeted_idx on public.signals (seq)
  where status = 'pending' and type <> 'run';
create index signals_expiring_leases_idx on public.signals (lease_expires_at)
  where status = 'processing';
-- The per-agent FIFO invariant, enforced by the database and not only by the claim query:
-- at most one run signal of an agent is processing at any moment.
create unique index signals_one_processing_run_per_agent on public.signals (agent_id)
  where status = 'processing' and type = 'run';

-- Refuse malformed signals where they enter, with messages that name the fix.
create or replace function public.signals_check_insert()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.type = 'run' and new.agent_id is null then
    raise exception 'a run signal needs an agent_id'
      using errcode = 'check_violation', constraint = 'signals_run_requires_agent',
            hint = 'Set agent_id to the id of the agent to run, or use type sync or fyi.';
  end if;
  -- Runs as the inserting role, so under RLS an agent the user may not use looks unknown.
  if new.agent_id is not null
     and not exists (select 1 from public.agents a where a.id = new.agent_id) then
    raise exception 'signal targets agent %, which does not exist or is not yours to use', new.agent_id
      using errcode = 'foreign_key_violation', constraint = 'signals_agent_id_fkey',
            hint = 'Use the id of an agent you own or a shared agent (see the agents table).';
  end if;
  if new.status <> 'pending' or new.error is not null or new.runtime_session_id is not null
     or new.worker_id is not null or new.lease_expires_at is not null or new.attempts <> 0 then
    raise exception 'a new signal must be pending, with no error, session, worker or lease'
      using errcode = 'check_violation', constraint = 'signals_status_lifecycle',
            hint = 'Insert only type, payload and agent_id; the engine sets the rest.';
  end if;
  return new;
end
$$;

create trigger signals_check_insert
  before insert on public.signals
  for each row execute function public.signals_check_insert();

-- The seed's lifecycle: pending → processing → complete | error; terminal states never change.
-- processing → pending happens only inside the engine's lease reclaim and release functions,
-- which set the transaction-local flag `portico.lease_return`.
create or replace function public.signals_check_transition()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is not distinct from old.status then
    return new;
  end if;
  if old.status = 'pending' and new.status = 'processing'
     or old.status = 'processing' and new.status in ('complete', 'error')
     or old.status = 'processing' and new.status = 'pending'
        and current_setting('portico.lease_return', true) = 'on' then
    return new;
  end if;
  raise exception 'signal % cannot go from % to %', old.id, old.status, new.status
    using errcode = 'check_violation', constraint = 'signals_status_lifecycle',
          hint = case
            when old.status in ('complete', 'error')
              then 'complete and error are final; send a new signal to run again.'
            when old.status = 'processing' and new.status = 'pending'
              then 'Only the engine''s lease reclaim (reclaim_expired_leases) or release_signals returns a signal to pending.'
            else 'The lifecycle is pending → processing → complete | error, driven by the engine.'
          end;
end
$$;

create trigger signals_check_transition
  before update of status on public.signals
  for each row execute function public.signals_check_transition();

-- ============================================================================
-- runtime_sessions
-- ============================================================================
-- status: running → the engine is executing the agent's steps; the engine finishes it, or
--                   reclaim/release ends it in error when its worker lost the signal.
--         success → terminal: every step succeeded.
--         error   → terminal: `error` names the failing step and the cause.
create table public.runtime_sessions (
  id uuid primary key default gen_random_uuid(),
  signal_id uuid not null references public.signals (id) on delete cascade,
  agent_id uuid not null references public.agents (id) on delete cascade,
  started_at timestamptz not null default now(),
  completed_at timestamptz,
  status text not null default 'running',
  error text,
  -- added: which run of the signal this session records (1, 2, … in the order they started),
  -- and by which worker. Not signals.attempts: a released run is not a failed attempt.
  attempt integer not null default 1,
  worker_id text,
  -- added: the last step's output when the session succeeded.
  output jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint runtime_sessions_status_valid check (status in ('running', 'success', 'error')),
  constraint runtime_sessions_completed_at_iff_ended
    check ((status = 'running') = (completed_at is null)),
  constraint runtime_sessions_error_iff_status_error check ((status = 'error') = (error is not null)),
  -- Its index leads with signal_id, so it also serves the foreign key.
  constraint runtime_sessions_one_per_attempt unique (signal_id, attempt)
);
create index runtime_sessions_agent_id_idx on public.runtime_sessions (agent_id);
create index runtime_sessions_status_idx on public.runtime_sessions (status);

alter table public.signals
  add constraint signals_runtime_session_id_fkey foreign key (runtime_session_id)
  references public.runtime_sessions (id) on delete set null;
create index signals_runtime_session_id_idx on public.signals (runtime_session_id);

create or replace function public.runtime_sessions_check_transition()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and old.status <> 'running' then
    raise exception 'runtime session % is % and final; it cannot become %', old.id, old.status, new.status
      using errcode = 'check_violation', constraint = 'runtime_sessions_status_lifecycle',
            hint = 'A session goes running → success | error once; a retry gets a new session.';
  end if;
  return new;
end
$$;

create trigger runtime_sessions_check_transition
  before update of status on public.runtime_sessions
  for each row execute function public.runtime_sessions_check_transition();

-- ============================================================================
-- step_results: the seed's RuntimeSession.step_results, one row per finished step.
-- ============================================================================
create table public.step_results (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.runtime_sessions (id) on delete cascade,
  -- Nullable so history survives when an agent's steps are replaced; name/type/position keep it readable.
  step_id uuid references public.steps (id) on delete set null,
  position integer not null,
  step_name text not null,
  step_type text not null,
  -- added: success | error, the outcome of this step.
  status text not null,
  started_at timestamptz not null,
  completed_at timestamptz not null,
  input jsonb,
  output jsonb,
  error text,
  duration_ms integer not null,
  -- added: what the step printed (python), capped by the engine.
  logs text not null default '',
  -- added: per-step facts such as LLM usage, model and cost.
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  constraint step_results_status_valid check (status in ('success', 'error')),
  constraint step_results_step_type_valid check (step_type in ('python', 'llm')),
  constraint step_results_error_iff_failed check ((status = 'error') = (error is not null)),
  constraint step_results_no_output_on_error check (status = 'success' or output is null),
  constraint step_results_times_ordered check (completed_at >= started_at),
  constraint step_results_duration_not_negative check (duration_ms >= 0),
  -- Its index leads with session_id, so it also serves the foreign key.
  constraint step_results_one_per_position unique (session_id, position)
);
create index step_results_step_id_idx on public.step_results (step_id);
create index step_results_status_idx on public.step_results (status);

-- ============================================================================
-- engine_config: one row whose epoch tells every engine when to reload agent definitions.
-- ============================================================================
create table public.engine_config (
  id boolean primary key default true,
  epoch bigint not null default 0,
  updated_at timestamptz not null default now(),
  constraint engine_config_single_row check (id)
);
insert into public.engine_config default values;

-- ============================================================================
-- updated_at
-- ============================================================================
create trigger agents_touch_updated_at before update on public.agents
  for each row execute function extensions.moddatetime(updated_at);
create trigger steps_touch_updated_at before update on public.steps
  for each row execute function extensions.moddatetime(updated_at);
create trigger signals_touch_updated_at before update on public.signals
  for each row execute function extensions.moddatetime(updated_at);
create trigger runtime_sessions_touch_updated_at before update on public.runtime_sessions
  for each row execute function extensions.moddatetime(updated_at);
create trigger engine_config_touch_updated_at before update on public.engine_config
  for each row execute function extensions.moddatetime(updated_at);
