-- A second step at a taken position is refused with a message that names the agent, the
-- position and the step already there, and a hint that says what to do, instead of
-- PostgreSQL's default duplicate-key text.
--
-- Why a constraint trigger and not a BEFORE trigger: steps_one_per_position is deferrable so
-- that a client can swap two positions, either in one statement or inside one transaction
-- after `set constraints public.steps_one_per_position deferred`. A BEFORE trigger sees the
-- half-done swap as a duplicate and cannot tell whether the client deferred the check. A
-- constraint trigger runs when the statement ends (all of it applied), or at commit when
-- deferred, and it can carry the name clients already defer: steps_one_per_position.
--
-- The unique constraint stays as the backstop (it holds with triggers disabled and between
-- concurrent transactions, which do not see each other's rows). It is renamed to free the
-- name and checked at commit, so that it never answers before the trigger does.

alter table public.steps drop constraint steps_one_per_position;
-- Its index leads with agent_id, so it also serves the foreign key.
alter table public.steps
  add constraint steps_position_unique unique (agent_id, position)
  deferrable initially deferred;

create or replace function public.steps_check_position()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_taken_by text;
begin
  -- When deferred, the row may have moved or gone since; only its current place counts.
  if not exists (select 1 from public.steps s
                  where s.id = new.id and s.agent_id = new.agent_id
                    and s.position = new.position) then
    return null;
  end if;
  select s.name into v_taken_by
    from public.steps s
   where s.agent_id = new.agent_id and s.position = new.position and s.id <> new.id
   order by s.created_at, s.id
   limit 1;
  if found then
    raise exception 'step "%": agent % already has a step at position % ("%")',
        new.name, new.agent_id, new.position, v_taken_by
      using errcode = 'unique_violation',
            constraint = 'steps_one_per_position',
            hint = 'Pick a free position, or move or delete the step at that position first '
                   '(to swap two steps in one transaction, run `set constraints '
                   'public.steps_one_per_position deferred` first). `portico agents apply` '
                   'replaces all of an agent''s steps at once.';
  end if;
  return null;
end
$$;

create constraint trigger steps_one_per_position
  after insert or update of agent_id, position on public.steps
  deferrable initially immediate
  for each row execute function public.steps_check_position();

-- Trigger functions run as part of the statements that fire them; nobody calls them directly.
revoke execute on function public.steps_check_position() from public, anon, authenticated;
