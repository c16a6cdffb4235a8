-- Wake-ups. Engines LISTEN on `portico_signals`; the payload is a signal id only (NOTIFY caps
-- payloads at 8 kB). A notification is a hint: engines also sweep for pending work about every
-- second, so a lost one costs latency, never correctness. Front ends follow the same rows
-- through Supabase Realtime (the supabase_realtime publication).

-- ============================================================================
-- NOTIFY when work may have become claimable
-- ============================================================================
-- A signal becomes claimable when it is inserted or returned to pending; the next signal of
-- an agent's queue becomes claimable when a run signal leaves processing.
create or replace function public.signals_notify_wakeup()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status = 'pending'
     or (tg_op = 'UPDATE' and old.status = 'processing' and new.status <> 'processing') then
    perform pg_notify('portico_signals', new.id::text);
  end if;
  return null;
end
$$;

create trigger signals_notify_wakeup
  after insert or update of status on public.signals
  for each row execute function public.signals_notify_wakeup();

-- ============================================================================
-- Agent configuration epoch
-- ============================================================================
-- Engines cache agent definitions and compare this epoch on every sweep, so an edit made from
-- a dashboard or supabase-js takes effect within a sweep; a sync signal forces it at once.
-- SECURITY DEFINER: signed-in users edit their agents but may not write engine_config.
create or replace function public.bump_config_epoch()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.engine_config set epoch = epoch + 1;
  perform pg_notify('portico_config', '');
  return null;
end
$$;

create trigger agents_bump_config_epoch
  after insert or update or delete on public.agents
  for each statement execute function public.bump_config_epoch();
create trigger steps_bump_config_epoch
  after insert or update or delete on public.steps
  for each statement execute function public.bump_config_epoch();

-- ============================================================================
-- Realtime publication (idempotent; the publication exists on every Supabase project)
-- ============================================================================
do $$
declare
  v_table text;
begin
  foreach v_table in array array['signals', 'runtime_sessions', 'step_results']
  loop
    if not exists (select 1 from pg_publication_tables
                    where pubname = 'supabase_realtime' and schemaname = 'public'
                      and tablename = v_table) then
      execute format('alter publication supabase_realtime add table public.%I', v_table);
    end if;
  end loop;
end
$$;
