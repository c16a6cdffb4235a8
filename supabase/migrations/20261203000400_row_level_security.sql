-- Who may do what. Grants are explicit: new Supabase projects no longer expose new `public`
-- objects to the API roles by default, and older ones granted everything; revoking first makes
-- both end up the same.
--
--   anon           reads and writes nothing.
--   authenticated  manages their own agents and steps; reads shared agents (owner_id null);
--                  inserts pending signals for agents they may use; reads the signals they
--                  created or that target their agents, and the sessions and step results of
--                  those runs. Never sets a signal's status, error or session link.
--   service_role   everything (BYPASSRLS); the only role that may call engine functions.

-- ============================================================================
-- Tables: reset, then grant
-- ============================================================================
revoke all on table public.agents, public.steps, public.signals, public.runtime_sessions,
  public.step_results, public.engine_config from public, anon, authenticated;

grant select, insert, update, delete on table public.agents, public.steps, public.signals,
  public.runtime_sessions, public.step_results, public.engine_config to service_role;

grant select, delete on table public.agents, public.steps to authenticated;
grant insert (name, description, is_active, owner_id) on table public.agents to authenticated;
grant update (name, description, is_active) on table public.agents to authenticated;
grant insert (agent_id, name, type, config, position) on table public.steps to authenticated;
grant update (name, type, config, position) on table public.steps to authenticated;
grant select on table public.signals, public.runtime_sessions, public.step_results to authenticated;
-- Column grants: a user supplies only what a signal asks for; the engine owns the rest.
grant insert (type, payload, agent_id) on table public.signals to authenticated;

alter table public.agents enable row level security;
alter table public.steps enable row level security;
alter table public.signals enable row level security;
alter table public.runtime_sessions enable row level security;
alter table public.step_results enable row level security;
alter table public.engine_config enable row level security;

-- ============================================================================
-- Helpers for policies (SECURITY DEFINER so a policy can look past RLS of another table)
-- ============================================================================
-- Agents the current user may run: their own and shared ones.
create or replace function public.may_use_agent(p_agent_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.agents a
                  where a.id = p_agent_id
                    and (a.owner_id is null or a.owner_id = (select auth.uid())))
$$;

create or replace function public.owns_agent(p_agent_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.agents a
                  where a.id = p_agent_id and a.owner_id = (select auth.uid()))
$$;

-- A session is visible to the owner of its agent and to whoever sent its signal.
create or replace function public.may_read_session(p_session_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1
                   from public.runtime_sessions r
                   join public.signals s on s.id = r.signal_id
                   join public.agents a on a.id = r.agent_id
                  where r.id = p_session_id
                    and (a.owner_id = (select auth.uid()) or s.created_by = (select auth.uid())))
$$;

-- ============================================================================
-- agents
-- ============================================================================
create policy agents_select_own_or_shared on public.agents
  for select to authenticated
  using (owner_id = (select auth.uid()) or owner_id is null);
create policy agents_insert_own on public.agents
  for insert to authenticated
  with check (owner_id = (select auth.uid()));
create policy agents_update_own on public.agents
  for update to authenticated
  using (owner_id = (select auth.uid()))
  with check (owner_id = (select auth.uid()));
create policy agents_delete_own on public.agents
  for delete to authenticated
  using (owner_id = (select auth.uid()));

-- ============================================================================
-- steps
-- ============================================================================
create policy steps_select_usable_agents on public.steps
  for select to authenticated
  using (public.may_use_agent(agent_id));
create policy steps_insert_own_agents on public.steps
  for insert to authenticated
  with check (public.owns_agent(agent_id));
create policy steps_update_own_agents on public.steps
  for update to authenticated
  using (public.owns_agent(agent_id))
  with check (public.owns_agent(agent_id));
create policy steps_delete_own_agents on public.steps
  for delete to authenticated
  using (public.owns_agent(agent_id));

-- ============================================================================
-- signals
-- ============================================================================
create policy signals_insert_pending_for_usable_agents on public.signals
  for insert to authenticated
  with check (
    status = 'pending'
    and created_by = (select auth.uid())
    and (agent_id is null or public.may_use_agent(agent_id))
  );
create policy signals_select_sent_or_own_agents on public.signals
  for select to authenticated
  using (created_by = (select auth.uid()) or public.owns_agent(agent_id));

-- ============================================================================
-- runtime_sessions, step_results
-- ============================================================================
create policy runtime_sessions_select_visible on public.runtime_sessions
  for select to authenticated
  using (public.may_read_session(id));
create policy step_results_select_visible on public.step_results
  for select to authenticated
  using (public.may_read_session(session_id));

-- engine_config: RLS on and no policy for signed-in users; service_role bypasses RLS.

-- ============================================================================
-- Functions: engine functions for service_role only; helpers for nobody else
-- ============================================================================
revoke execute on function
  public.claim_signals(text, integer, integer, timestamptz),
  public.renew_leases(text, uuid[], integer, timestamptz),
  public.lock_held_signal(uuid, text),
  public.record_step_result(uuid, text, integer, uuid, text, text, jsonb, jsonb, text,
                            timestamptz, timestamptz, text, jsonb, boolean),
  public.end_signal(public.signals, text, jsonb, timestamptz),
  public.finish_signal(uuid, text, text, jsonb, timestamptz),
  public.return_signal(public.signals, text, text, boolean, timestamptz),
  public.release_signals(text, uuid[], timestamptz),
  public.reclaim_expired_leases(integer, timestamptz),
  public.config_epoch(),
  public.agent_definition(uuid),
  public.signal_report(uuid),
  public.apply_agent(jsonb)
  from public, anon, authenticated;

grant execute on function
  public.claim_signals(text, integer, integer, timestamptz),
  public.renew_leases(text, uuid[], integer, timestamptz),
  public.lock_held_signal(uuid, text),
  public.record_step_result(uuid, text, integer, uuid, text, text, jsonb, jsonb, text,
                            timestamptz, timestamptz, text, jsonb, boolean),
  public.end_signal(public.signals, text, jsonb, timestamptz),
  public.finish_signal(uuid, text, text, jsonb, timestamptz),
  public.return_signal(public.signals, text, text, boolean, timestamptz),
  public.release_signals(text, uuid[], timestamptz),
  public.reclaim_expired_leases(integer, timestamptz),
  public.config_epoch(),
  public.agent_definition(uuid),
  public.signal_report(uuid),
  public.apply_agent(jsonb)
  to service_role;

-- Trigger functions run as part of the statements that fire them; nobody calls them directly.
revoke execute on function
  public.steps_check_config(),
  public.signals_check_insert(),
  public.signals_check_transition(),
  public.runtime_sessions_check_transition(),
  public.signals_notify_wakeup(),
  public.bump_config_epoch()
  from public, anon, authenticated;

-- Policy helpers and the config check are evaluated for signed-in users.
revoke execute on function
  public.may_use_agent(uuid), public.owns_agent(uuid), public.may_read_session(uuid),
  public.step_config_problems(text, jsonb)
  from public, anon;
grant execute on function
  public.may_use_agent(uuid), public.owns_agent(uuid), public.may_read_session(uuid),
  public.step_config_problems(text, jsonb)
  to authenticated, service_role;
