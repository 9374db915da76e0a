-- The database role of a GPU server's agent (`AIVC_HOST=<host> manage.py qcluster`): the
-- least it needs to run its host's reconcile ticks, heartbeats, GPU samples, space audits
-- and its django-q cluster. It cannot change an account (password hash, profile, flags,
-- tokens, SSH keys), a capability profile, a booking's size or anyone's session.
--
--   psql -v ON_ERROR_STOP=1 -v role=aivc_agent -v database=aivc -f deploy/postgres/agent-role.sql
--
-- Idempotent: run again after an upgrade; every grant is revoked first, then given again,
-- so the role holds exactly what this file lists. Run it as the owner of the portal's tables
-- (or a superuser) after `manage.py migrate`. The password is set apart, never on a
-- command line: `\password aivc_agent` in psql, then the agent's DATABASE_URL names it.
-- docs/security.md (agents) explains each grant and the pg_hba rule that goes with it.

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"role";
GRANT CONNECT ON DATABASE :"database" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";

-- Read only: who books what, with which limits and images.
GRANT SELECT ON
    accounts_user, accounts_capabilityprofile, accounts_userchannels, accounts_limitgrant,
    bookings_hostaccess, bookings_hostaccess_profiles, bookings_hostaccess_users,
    containers_image, django_content_type, jobs_queuestate, jobs_hostdrain
TO :"role";

-- The reconcile tick: a reservation's status, container and end; its GPU allocations'
-- end when it stops early; a job's status and a build's progress.
GRANT SELECT, UPDATE ON bookings_reservation, bookings_gpuallocation, jobs_job, jobs_jobbuild TO :"role";
-- A host's folders and limits are the maintainers': the agent only marks its host as served.
GRANT SELECT, UPDATE (served_by_agent) ON containers_host TO :"role";

-- What the agent records: events (and the notices they make), heartbeats, GPU inventory
-- and samples, image presence, space audits.
GRANT SELECT, INSERT ON containers_containerevent, accounts_notification TO :"role";
GRANT SELECT, INSERT, UPDATE ON
    containers_hostagent, containers_gpu, containers_imagepresence, containers_spaceaudit
TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON
    containers_gpusample, containers_gpuduplicateuse, containers_reservationgpustatus
TO :"role";

-- Its django-q cluster: the queue (ORM broker), results, its schedules' next run; the
-- shared cache (throttle counts, locks).
GRANT SELECT, INSERT, UPDATE, DELETE ON django_q_ormq, aivc_cache TO :"role";
GRANT SELECT, INSERT, UPDATE ON django_q_task, django_q_schedule TO :"role";

-- The id sequences of the tables it inserts into.
SELECT format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence(t, 'id'), :'role')
FROM unnest(ARRAY[
    'containers_containerevent', 'accounts_notification', 'containers_hostagent',
    'containers_gpu', 'containers_imagepresence', 'containers_spaceaudit',
    'containers_gpusample', 'containers_gpuduplicateuse', 'containers_reservationgpustatus',
    'django_q_ormq', 'django_q_schedule'
]) AS t
WHERE pg_get_serial_sequence(t, 'id') IS NOT NULL \gexec
