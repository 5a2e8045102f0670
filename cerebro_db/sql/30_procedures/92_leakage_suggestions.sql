-- The leakage warning's part that reads the dataset rather than the curves (90_suggestions.sql calls these):
-- rows copied between the splits (dataset_leakage, 40_api/22_dataset_leakage.sql), counted once per dataset.

-- The copies of a workload's dataset, for a leakage warning's evidence.
CREATE OR REPLACE FUNCTION leakage_evidence(workload_id int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    copies record;
BEGIN
    SELECT l.validation_duplicates, l.validation_rows, l.validation_duplicate_fraction, l.train_duplicates INTO copies
    FROM workloads w CROSS JOIN LATERAL dataset_leakage(w.dataset) l
    WHERE w.workload_id = leakage_evidence.workload_id;
    RETURN jsonb_build_object('validation_duplicates', copies.validation_duplicates,
                              'validation_rows', copies.validation_rows,
                              'validation_duplicate_fraction', _evidence_number(copies.validation_duplicate_fraction),
                              'train_duplicates', copies.train_duplicates);
END
$$;

-- A workload whose dataset has validation rows that copy training rows is warned at its first epoch end, before
-- any curve can show it (once: add_suggestion keeps one open, and a dismissal sticks for the workload).
CREATE OR REPLACE FUNCTION suggest_duplicate_rows(workload_id int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    evidence jsonb := leakage_evidence(workload_id);
BEGIN
    IF (evidence ->> 'validation_duplicates')::bigint > 0 THEN
        PERFORM add_suggestion(workload_id, NULL, 'leakage',
            duplicate_rows_reason((evidence ->> 'validation_duplicates')::bigint,
                                  (evidence ->> 'validation_rows')::bigint),
            evidence,
            'none by itself: validation metrics overstate how the models generalize until the copies are removed'
            ' from the source table and the dataset is prepared again', NULL);
    END IF;
END
$$;
