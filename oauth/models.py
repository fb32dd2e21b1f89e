"""The authorization server's state: clients, pending authorizations, connections and their
codes and refresh tokens. Secrets (client secrets, codes, refresh tokens) are stored only as
`billing.keys.key_hash` HMACs; access tokens live in billing (`AccessToken`), beside the keys
the gateway already admits.

A `Connection` is one client a buyer allowed to use one license: it owns an `ApiKey` of kind
oauth, so usage, last use, spend caps and revocation are the key's.
"""

from django.conf import settings
from django.db import models


class ClientKind(models.TextChoices):
    REGISTERED = "registered", "Registered (RFC 7591)"
    METADATA_DOCUMENT = "metadata_document", "Client ID Metadata Document"


class Client(models.Model):
    client_id = models.CharField(max_length=500, unique=True)
    kind = models.CharField(max_length=20, choices=ClientKind.choices)
    name = models.CharField(max_length=100, blank=True, default="")
    # The client's metadata as the SDK validated it (OAuthClientInformationFull), secret removed.
    metadata = models.JSONField(default=dict)
    secret_hash = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    fetched_at = models.DateTimeField(null=True, blank=True)  # metadata documents only

    def __str__(self) -> str:
        return self.name or self.client_id


class AuthorizationRequest(models.Model):
    """An /authorize request waiting for the buyer's answer on the consent page.

    Its id is in the consent page's URL; it grants nothing by itself (the buyer must sign in and
    allow), and it is answered at most once."""

    id = models.CharField(primary_key=True, max_length=43)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    listing = models.ForeignKey("marketplace.Listing", on_delete=models.CASCADE, related_name="+")
    resource = models.CharField(max_length=500)
    redirect_uri = models.TextField()
    redirect_uri_explicit = models.BooleanField(default=True)
    code_challenge = models.CharField(max_length=128)
    state = models.TextField(blank=True, default="")
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    def __str__(self) -> str:
        return f"authorization request of client {self.client_id}"


class Connection(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oauth_connections"
    )
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="connections")
    key = models.OneToOneField(
        "billing.ApiKey", on_delete=models.CASCADE, related_name="oauth_connection"
    )
    resource = models.CharField(max_length=500)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.client} on key {self.key_id}"


class AuthorizationCode(models.Model):
    code_hash = models.CharField(max_length=64, unique=True)
    request = models.OneToOneField(
        AuthorizationRequest, on_delete=models.CASCADE, related_name="code"
    )
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"code of connection {self.connection_id}"


class RefreshToken(models.Model):
    """Rotating: each is used once; a second use revokes the connection (OAuth 2.1 §4.3.1)."""

    token_hash = models.CharField(max_length=64, unique=True)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"refresh token of connection {self.connection_id}"
