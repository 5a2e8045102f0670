-- PL/Python entry points return {"result": ...} or {"error": ..., "hint": ...}; this
-- turns the latter into a plain SQL error (no Python traceback in front of users), with the
-- outcome's own SQLSTATE if it names one ("errcode": a condition name), else invalid_parameter_value.
CREATE OR REPLACE FUNCTION raise_if_error(outcome jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF outcome ? 'error' THEN
        RAISE EXCEPTION USING
            MESSAGE = outcome ->> 'error',
            HINT = coalesce(outcome ->> 'hint', ''),
            ERRCODE = coalesce(outcome ->> 'errcode', 'invalid_parameter_value');
    END IF;
    RETURN outcome -> 'result';
END
$$;
