-- Key events for server push: revoking a key (or deleting it, as deleting its
-- user does) sends
--   NOTIFY lumilio_key_events, '{"key_id"}'
-- so that every host ends the event streams opened with that key at once,
-- whichever process or plain SQL revoked it.
CREATE FUNCTION lumilio_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lumilio_key_events', json_build_object('key_id', OLD.id)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify_revoke
    AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION lumilio_notify_key();

CREATE TRIGGER api_keys_notify_delete
    AFTER DELETE ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL)
    EXECUTE FUNCTION lumilio_notify_key();
