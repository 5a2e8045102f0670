-- Where committed model states live: one immutable file per state under the data directory,
-- cerebro_states/<database oid>/c<config>-x<writer's transaction id>.state (plpy/cerebro_plpy/state_files.py
-- does the I/O). A 270 MB state in a bytea column costs TOAST ~135,000 chunk tuples and as much WAL, 2 s a hop;
-- as a file, one write and one fsync. model_states.state_file names each config's file, committed with the hop.
-- The rules that keep it crash safe, and where each is kept:
--   * a file and its directory entry are on disk before the transaction naming it commits (state_files.write);
--   * files never change; a clone or warm start takes a second name of its source's file (state_file_linked);
--   * a transaction that stops naming a file commits synchronously (the trigger below), so a sweep that sees
--     a file unnamed never removes a file a crash could name again;
--   * garbage is what no committed row names and whose writer has finished, both as one snapshot sees them
--     (sweep_state_files).

CREATE OR REPLACE FUNCTION state_directory() RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT 'cerebro_states/' || oid FROM pg_database WHERE datname = current_database()
$$;

-- The name this transaction gives config_id's new state: the writer's transaction id in it lets a sweep
-- tell a unit in flight from one rolled back.
CREATE OR REPLACE FUNCTION new_state_file(config_id int) RETURNS text
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    SELECT format('c%s-x%s.state', config_id, txid_current())
$$;

CREATE OR REPLACE FUNCTION _write_state_file(directory text, name text, state bytea) RETURNS bigint
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.write_state_file(directory, name, state)
$$;

CREATE OR REPLACE FUNCTION _read_state_file(directory text, name text) RETURNS bytea
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.read_state_file(directory, name)
$$;

CREATE OR REPLACE FUNCTION _link_state_file(directory text, source text, target text) RETURNS boolean
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import state_files
return state_files.link(directory, source, target)
$$;

CREATE OR REPLACE FUNCTION _rename_state_file(directory text, source text, target text) RETURNS void
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import state_files
state_files.rename(directory, source, target)
$$;

CREATE OR REPLACE FUNCTION _state_files(directory text) RETURNS SETOF text
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import state_files
return state_files.names(directory)
$$;

CREATE OR REPLACE FUNCTION _delete_other_databases_state_files(live oid[]) RETURNS text[]
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import state_files
return state_files.delete_other_databases(live)
$$;

CREATE OR REPLACE FUNCTION _delete_state_files(directory text, names text[]) RETURNS int
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import state_files
return state_files.delete(directory, names)
$$;

-- config_id's committed state (NULL before its first hop): for a unit that trains on another server and for
-- evaluate, predict and export (config_state). No lock: a reader never holds up a hop.
CREATE OR REPLACE FUNCTION stored_state(config_id int) RETURNS bytea
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    name text;
    state bytea;
BEGIN
    LOOP
        name := (SELECT s.state_file FROM model_states s WHERE s.config_id = stored_state.config_id);
        IF name IS NULL THEN
            RETURN NULL;
        END IF;
        state := _read_state_file(state_directory(), name);
        IF state IS NOT NULL THEN
            RETURN state;
        END IF;
        -- Gone since this statement's snapshot: a hop superseded it and a sweep removed it. The next
        -- statement sees the newer name; the same name again means the file itself is lost.
        PERFORM check_state_file_kept(stored_state.config_id, name);
    END LOOP;
END
$$;

-- A second name of config_id's state file `name`, made in this transaction and so swept if it rolls back:
-- whoever takes it (clone_config, a warm start) owns it, and config_id may hop on and its old file be swept
-- meanwhile. The name is c<config_id>-x<this transaction>.staged (not .state: this transaction may be
-- config_id's own hop, an autopilot clone at its epoch end) until renamed to its taker's (state_file_renamed).
-- NULL if the file is gone (superseded since the caller read `name`: read the row again).
CREATE OR REPLACE FUNCTION state_file_linked(config_id int, name text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    linked text := format('c%s-x%s.staged', config_id, txid_current());
BEGIN
    IF _link_state_file(state_directory(), name, linked) THEN
        RETURN linked;
    END IF;
    PERFORM check_state_file_kept(config_id, name);  -- not superseded: lost
    RETURN NULL;
END
$$;

-- state_file_linked's file, as new_state_file(config_id): the name its taker's row commits.
CREATE OR REPLACE FUNCTION state_file_renamed(name text, config_id int) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    renamed text := new_state_file(config_id);
BEGIN
    -- A file of that name is this transaction's: a rolled-back attempt's may go, one a row names may not.
    IF EXISTS (SELECT 1 FROM model_states s WHERE s.state_file = renamed) THEN
        RAISE EXCEPTION 'config % has a state already', config_id
            USING HINT = 'a clone or warm start gives a config its state once', ERRCODE = 'unique_violation';
    END IF;
    PERFORM _rename_state_file(state_directory(), name, renamed);
    RETURN renamed;
END
$$;

-- Raised when config_id's committed row still names a file that is gone (not superseded: lost).
CREATE OR REPLACE FUNCTION check_state_file_kept(config_id int, name text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM model_states s WHERE s.config_id = check_state_file_kept.config_id
                                              AND s.state_file = name) THEN
        RAISE EXCEPTION 'the state file % of config % is missing from %', name, config_id, state_directory()
            USING HINT = 'model states live in files under the data directory (docs/architecture.md, State files): '
                         'restore them with the data directory; in a REPEATABLE READ transaction, read the '
                         'state of a training config in a new one',
                  ERRCODE = 'undefined_file';
    END IF;
END
$$;

-- Remove the state files no committed row names and no running transaction may still name (and the state
-- directories of dropped databases). One statement, so one snapshot, decides both: a file whose writer (the id
-- in its name) this snapshot sees finished, and that no row this snapshot sees names. The snapshot, not the
-- commit log: a committing writer is marked committed before its row is visible (and, with a synchronous
-- standby, stays so while it waits), so a commit-log check could see it finished and its row not yet there.
-- A writer running, or past the snapshot (a file copied from elsewhere), keeps its file. Called at each
-- unit's start (unit_start).
CREATE OR REPLACE FUNCTION sweep_state_files() RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    directory text := state_directory();
    garbage text[];
BEGIN
    SELECT array_agg(f) INTO garbage
    FROM _state_files(directory) f
    WHERE txid_visible_in_snapshot(substring(f FROM '-x([0-9]+)\.[a-z]+$')::bigint, txid_current_snapshot())
      AND NOT EXISTS (SELECT 1 FROM model_states s WHERE s.state_file = f);
    -- A backend writes only into its own database's directory, and it is connected to a committed database.
    PERFORM _delete_other_databases_state_files(ARRAY(SELECT oid FROM pg_database));
    RETURN CASE WHEN garbage IS NULL THEN 0 ELSE _delete_state_files(directory, garbage) END;
END
$$;

-- A transaction that stops naming a state file (a hop's new state, a deleted config) commits synchronously
-- even where synchronous_commit is off: a sweep sees the change only once it is on disk, so a crash cannot
-- bring back a name whose file was removed.
CREATE OR REPLACE FUNCTION state_file_released() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'local', true);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER state_file_released AFTER UPDATE OF state_file OR DELETE OR TRUNCATE ON model_states
    FOR EACH STATEMENT EXECUTE FUNCTION state_file_released();
