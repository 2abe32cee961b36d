DROP TRIGGER IF EXISTS assets_notify_status ON assets;
DROP TRIGGER IF EXISTS assets_notify_insert_delete ON assets;
DROP FUNCTION IF EXISTS lumilio_notify_asset();
