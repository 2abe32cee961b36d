-- Change events for server push (GET /api/v1/events): every new asset, every
-- change of status or favourite flag, and every delete sends
--   NOTIFY lumilio_asset_events, '{"op", "asset_id", "owner_id", "status"}'
-- Postgres delivers it when the transaction commits (and not at all if it
-- rolls back), so listeners only hear about committed rows. The host holds
-- one LISTEN connection and forwards each event to its owner's streams only.
CREATE FUNCTION lumilio_notify_asset() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_ := OLD;
    ELSE
        row_ := NEW;
    END IF;
    PERFORM pg_notify('lumilio_asset_events', json_build_object(
        'op', lower(TG_OP),
        'asset_id', row_.id,
        'owner_id', row_.owner_id,
        'status', row_.status)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER assets_notify_insert_delete
    AFTER INSERT OR DELETE ON assets
    FOR EACH ROW EXECUTE FUNCTION lumilio_notify_asset();

CREATE TRIGGER assets_notify_status
    AFTER UPDATE OF status, is_favorite ON assets
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.is_favorite IS DISTINCT FROM NEW.is_favorite)
    EXECUTE FUNCTION lumilio_notify_asset();
