-- What cerebro_user may touch (loaded last, after every object exists). Everything else in
-- the schema is the installing role's: the scheduler's functions (claim_unit, run_unit, the
-- system's status transitions: config_transition, workload_transition, fail_config, finish_workload,
-- config_hop_committed, settle_unrunnable_configs; procedures), model_states and the raw tables'
-- system-written columns.
-- Row-level security (cerebro_db/migrations/versions/v0_3_0_tenancy.py) then limits every row to its owner.

REVOKE ALL ON ALL TABLES IN SCHEMA cerebro FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA cerebro FROM PUBLIC;
GRANT USAGE ON SCHEMA cerebro TO cerebro_user;

-- Reading: the catalog of one's own work, and the views over it (security_invoker).
GRANT SELECT (segment) ON segments TO cerebro_user;  -- not dsn: it may carry credentials
GRANT SELECT ON datasets, dataset_buffers, workloads, configs, units, unit_attempts, epoch_metrics, config_events,
                registered_models, leaderboard, roster, workload_progress, segment_activity, workload_lineage,
                active_units, limits, status_transitions, alembic_version, imported_models, imported_model_catalog,
                suggestion_log, suggestions, suggestion_kinds, feature_sets, feature_buffers, feature_passes,
                feature_catalog, dataset_duplicates
    TO cerebro_user;  -- alembic_version: the dashboard checks the schema version whoever logs in
-- Limits are the admins' to set (row-level security shows a user their own row and '*').
GRANT INSERT, UPDATE, DELETE ON limits TO cerebro_admin;
-- Imported models are written only by the SECURITY DEFINER import_model, after its check; their owners drop them
-- (drop_imported_model, or DELETE: row-level security).
GRANT DELETE ON imported_models TO cerebro_user;
-- Materialized features are written by the units; their owners drop them (drop_features, or DELETE).
GRANT DELETE ON feature_sets TO cerebro_user;

-- Datasets, their buffers and workloads are written only by the SECURITY DEFINER writers
-- (_store_dataset, _store_dataset_buffer, _create_workload), which stamp the owner and check
-- what they write. Explicit: earlier versions granted these inserts.
REVOKE INSERT ON datasets, dataset_buffers, workloads FROM cerebro_user;
-- add_config / clone_config / INSERT INTO configs: owner, status and progress are not the
-- caller's to set (the insert trigger checks the params and decides the rest).
GRANT INSERT (workload_id, params, max_epochs, seed) ON configs TO cerebro_user;
-- Steering: the status machine's columns (the configs_status / workloads_status triggers check the
-- change against the users' rows of status_transitions), and the autonomy and its budget (the
-- workloads_autonomy trigger checks them; autopilot_since, budget_spent_at and budget_of are the system's).
GRANT UPDATE (status, max_epochs) ON configs TO cerebro_user;
GRANT UPDATE (status, name, description, unit_timeout, autonomy, budget_epochs, budget_seconds)
    ON workloads TO cerebro_user;

-- The SQL API, and what its invoker-rights functions, triggers and views call (names
-- without arguments: each is unique, so a changed signature cannot slip through).
GRANT EXECUTE ON FUNCTION
    prepare_dataset, dataset_leakage, duplicate_rows_reason, run_model_selection, add_config, clone_config,
    warm_start_configs, accept_suggestion, dismiss_suggestion, _open_suggestion, _resolve_suggestion,
    _carry_out_suggestion, suggestion_is_live, suggestion_thresholds, hyperband_rung_factor, autopilot_spent,
    evaluate, predict, export_model, import_model, drop_imported_model, model_layers, max_import_bytes, drop_features,
    raise_if_error, searched_params, seed_bound, derived_seed, is_internal, acting_role, event_actor, scheduler_alive, roster_params,
    legal_transition, transitions_hint, workload_has_active_configs, workload_finished,
    role_limits, raise_over_limit, check_max_epochs, bounded_unit_timeout, active_configs, check_max_active_configs,
    check_active_configs, check_room_for_a_config, check_new_config,
    dataset_name_taken, is_registered_model, config_state, config_state_bytes, _store_dataset, _store_dataset_buffer, _create_workload,
    _prepare_dataset, _expand_search_space, _complete_params, _check_training_memory, training_memory_limit,
    _evaluate, _predict_begin, _predict_part, _export_model, transfer_base, _transfer_params, _check_transfer_space,
    check_transfer_base, transfer_configs_using,
    scheduler_lock_key, config_lock_key, segment_lock_key, quota_lock_key
    TO cerebro_user;
GRANT EXECUTE ON PROCEDURE wait_for_workload TO cerebro_user;

-- Custom scripts run as the server's own Python: registering one is the admins' alone. Its audit
-- (register_model writes it) is theirs to read, nobody's but the schema owner's to change.
GRANT EXECUTE ON FUNCTION register_model TO cerebro_admin;
GRANT SELECT ON model_registrations TO cerebro_admin;

-- The unit claim, the per-workload procedure lock and the one-scheduler lock are advisory
-- locks on fixed keys: a user holding one could stall every workload. Nobody but the
-- scheduler (the schema owner) needs advisory locks in this database.
REVOKE EXECUTE ON FUNCTION
    pg_catalog.pg_advisory_lock(int, int), pg_catalog.pg_advisory_lock_shared(int, int),
    pg_catalog.pg_try_advisory_lock(int, int), pg_catalog.pg_try_advisory_lock_shared(int, int),
    pg_catalog.pg_advisory_xact_lock(int, int), pg_catalog.pg_advisory_xact_lock_shared(int, int),
    pg_catalog.pg_try_advisory_xact_lock(int, int), pg_catalog.pg_try_advisory_xact_lock_shared(int, int)
    FROM PUBLIC;
