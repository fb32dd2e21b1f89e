"""Settings of the authorization server (oauth/): lifetimes and bounds."""

from config.env import env_int

# Access tokens are credentials at the gateway; short-lived so a leaked one is worth little.
OAUTH_ACCESS_TOKEN_SECONDS = max(env_int("OAUTH_ACCESS_TOKEN_SECONDS", 3600), 1)
OAUTH_REFRESH_TOKEN_SECONDS = max(env_int("OAUTH_REFRESH_TOKEN_SECONDS", 30 * 24 * 3600), 60)
# Codes are exchanged by the client right after the redirect (RFC 6749 §4.1.2: short).
OAUTH_CODE_SECONDS = 300
# Long enough to sign up and buy a plan through Checkout inside the consent flow.
OAUTH_AUTHORIZATION_REQUEST_SECONDS = 3600
# Dynamic registration is anonymous: clients registered per client address and hour.
OAUTH_REGISTRATIONS_PER_HOUR = env_int("OAUTH_REGISTRATIONS_PER_HOUR", 30)
OAUTH_MAX_CONNECTIONS_PER_LICENSE = env_int("OAUTH_MAX_CONNECTIONS_PER_LICENSE", 20)
# Client ID Metadata Documents are fetched through the SSRF guard with these bounds.
OAUTH_CLIENT_METADATA_MAX_BYTES = 64 * 1024
OAUTH_CLIENT_METADATA_TIMEOUT = 5.0
OAUTH_CLIENT_METADATA_MAX_AGE = 3600  # refetched after this many seconds
OAUTH_SCOPES = ["mcp"]
