"""What each kind of email is: who it is for, whether people may turn it off, its subject.

Receipts and security mails (a key was created or rotated), the notice of a price increase
(its notice period is what makes the increase fair), failed payments, disputes, tool
manifest changes (a possible rug-pull) and tools awaiting approval (agents see none until then)
always go out; the rest can be turned off on
/me/notifications/.
"""

from dataclasses import dataclass

from notifications.models import NotificationKind as K

BUYER = "buyer"
CREATOR = "creator"


@dataclass(frozen=True, slots=True)
class KindSpec:
    audience: str
    optional: bool
    subject: str  # a Django template over the notification's context
    help: str = ""


KINDS: dict[str, KindSpec] = {
    K.RECEIPT: KindSpec(BUYER, False, "Your receipt: {{ listing_name }} ({{ plan_name }})"),
    K.KEY_CREATED: KindSpec(BUYER, False, "A new key was created for {{ listing_name }}"),
    K.KEY_ROTATED: KindSpec(BUYER, False, "A key for {{ listing_name }} was rotated"),
    K.KEY_EXPIRING: KindSpec(
        BUYER,
        True,
        "A key for {{ listing_name }} expires on {{ expires_on }}",
        "When a key stops working within the next days.",
    ),
    K.PRICE_INCREASE: KindSpec(
        BUYER, False, "{{ listing_name }}: new prices from {{ effective_on }}"
    ),
    K.PAYMENT_FAILED: KindSpec(BUYER, False, "Your payment for {{ listing_name }} failed"),
    K.SUBSCRIPTION_ENDING: KindSpec(
        BUYER,
        True,
        "Your subscription ends on {{ ends_on }}",
        "When a subscription is set to end at the close of its period.",
    ),
    K.SUBSCRIPTION_ENDED: KindSpec(
        BUYER, True, "Your subscription has ended", "When a subscription has ended."
    ),
    K.QUOTA_80: KindSpec(
        BUYER,
        True,
        "80% of this month's calls used: {{ listing_name }}",
        "When a license has used 80% of its monthly calls.",
    ),
    K.NEW_SALE: KindSpec(
        CREATOR, True, "New sale: {{ listing_name }} ({{ plan_name }})", "Each new purchase."
    ),
    K.PAYOUTS_ATTENTION: KindSpec(
        CREATOR,
        True,
        "Stripe needs more information before paying you",
        "When Stripe asks for details before it can pay you out.",
    ),
    K.UPSTREAM_UNHEALTHY: KindSpec(
        CREATOR,
        True,
        "Your upstream for {{ listing_name }} is failing",
        "When your server stops answering calls properly.",
    ),
    K.TOOL_MANIFEST_CHANGED: KindSpec(
        CREATOR, False, "Tools of {{ listing_name }} changed: review needed"
    ),
    K.TOOLS_AWAITING_APPROVAL: KindSpec(
        CREATOR, False, "{{ listing_name }}: approve its tools before agents can use them"
    ),
    K.DISPUTE_OPENED: KindSpec(CREATOR, False, "A payment for {{ listing_name }} was disputed"),
}


def kind_spec(kind: str) -> KindSpec:
    return KINDS[kind]


def optional_kinds(*, audiences: tuple[str, ...] = (BUYER, CREATOR)) -> list[str]:
    return [k for k, spec in KINDS.items() if spec.optional and spec.audience in audiences]
