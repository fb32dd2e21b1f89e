"""`POST /billing/webhooks/stripe`: verify the raw body, store the event, acknowledge fast.

Processing happens in `stripe_event_process_task`, enqueued on commit. A duplicate delivery is
acknowledged with 200 and not re-enqueued once processed. A bad, stale or future signature gets
a 400 whose body says nothing about why (no oracle for forgers), and nothing is stored.
"""

import logging

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import stripe_client
from billing.models import StripeEventStatus
from billing.services.events import stripe_event_store
from billing.tasks import stripe_event_process_task

logger = logging.getLogger(__name__)

# Stripe events are small; anything bigger is not from Stripe.
MAX_BODY_BYTES = 512 * 1024


@csrf_exempt
@require_POST
def stripe_webhook_view(request: HttpRequest) -> HttpResponse:
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BODY_BYTES:
        return JsonResponse({"error": "invalid request"}, status=400)
    payload = request.body
    sig_header = request.headers.get("Stripe-Signature", "")
    try:
        event = stripe_client.construct_event(payload, sig_header)
    except stripe_client.WebhookSignatureError:
        logger.warning("billing.webhook_bad_signature")
        return JsonResponse({"error": "invalid signature"}, status=400)
    except ValueError:
        logger.warning("billing.webhook_bad_payload")
        return JsonResponse({"error": "invalid request"}, status=400)
    with transaction.atomic():
        row, created = stripe_event_store(payload=payload)
        if created or row.status in (StripeEventStatus.RECEIVED, StripeEventStatus.FAILED):
            pk = row.pk
            transaction.on_commit(lambda: stripe_event_process_task.delay(pk))
    logger.info(
        "billing.webhook_received",
        extra={"event": event["id"], "duplicate": not created},
    )
    return JsonResponse({"received": True, "duplicate": not created})
