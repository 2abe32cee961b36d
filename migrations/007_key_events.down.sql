DROP TRIGGER IF EXISTS api_keys_notify_delete ON api_keys;
DROP TRIGGER IF EXISTS api_keys_notify_revoke ON api_keys;
DROP FUNCTION IF EXISTS lumilio_notify_key();
