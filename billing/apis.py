"""REST API: buyers' own licenses and keys, and creators' listings, plans and checkout.

Thin views: validate, call one service or selector, serialise. Another user's license or key
is a 404 (selectors filter by owner), never a 403 that would confirm it exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.authentication import ME_AUTHENTICATION
from billing.models import RATE_LIMIT_MAX_PER_MINUTE, ApiKey, License, Plan, PlanKind
from billing.services import checkout, claims, creators, licenses, plans
from common.exceptions import ApplicationError
from marketplace.models import Listing

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _user(request: Request | HttpRequest) -> User:
    """The signed-in user (every caller is behind login_required / IsAuthenticated)."""
    return cast("User", request.user)


class _KeyOutput(serializers.ModelSerializer[ApiKey]):
    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "display_prefix",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "daily_spend_cap",
            "monthly_spend_cap",
        ]


class _LicenseOutput(serializers.ModelSerializer[License]):
    listing = serializers.CharField(source="listing.name")
    plan_name = serializers.CharField(source="plan.name")
    plan_kind = serializers.CharField(source="plan.kind")

    class Meta:
        model = License
        fields = [
            "id",
            "listing",
            "plan",
            "plan_name",
            "plan_kind",
            "status",
            "source",
            "created_at",
            "expires_at",
        ]


class _Error(serializers.Serializer[Any]):
    message = serializers.CharField()
    extra = serializers.DictField()


_ERRORS = {400: _Error, 403: _Error, 404: _Error}


class _KeyCreated(_KeyOutput):
    key = serializers.CharField(help_text="The raw key. Shown in this response only.")

    class Meta(_KeyOutput.Meta):
        fields = [*_KeyOutput.Meta.fields, "key"]


class LicenseListApi(APIView):
    authentication_classes = ME_AUTHENTICATION  # a personal token or the session
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="LicenseListOutput")
    class OutputSerializer(_LicenseOutput):
        pass

    @extend_schema(
        operation_id="me_licenses_list",
        responses={
            200: inline_serializer("LicenseList", {"results": _LicenseOutput(many=True)}),
            **_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        qs = selectors.license_list_for_buyer(buyer=_user(request))
        return Response({"results": self.OutputSerializer(qs, many=True).data})


class LicenseDetailApi(APIView):
    authentication_classes = ME_AUTHENTICATION  # a personal token or the session
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="LicenseDetailOutput")
    class OutputSerializer(_LicenseOutput):
        pass

    @extend_schema(operation_id="me_licenses_retrieve", responses={200: _LicenseOutput, **_ERRORS})
    def get(self, request: Request, license_id: int) -> Response:
        lic = selectors.license_get_for_buyer(buyer=_user(request), license_id=license_id)
        return Response(self.OutputSerializer(lic).data)


class ApiKeyListCreateApi(APIView):
    """GET lists a license's keys, POST mints one. One view serves both verbs of the same
    collection URL; each verb is still one selector or one service call."""

    authentication_classes = ME_AUTHENTICATION  # a personal token or the session
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ApiKeyListCreateInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        name = serializers.CharField(max_length=100, required=False, default="")
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        daily_spend_cap = serializers.IntegerField(
            min_value=0, required=False, allow_null=True, default=None
        )
        monthly_spend_cap = serializers.IntegerField(
            min_value=0, required=False, allow_null=True, default=None
        )

    @extend_schema_serializer(component_name="ApiKeyListCreateOutput")
    class OutputSerializer(_KeyOutput):
        pass

    CreatedSerializer = _KeyCreated

    @extend_schema(
        operation_id="me_license_keys_list",
        responses={
            200: inline_serializer("ApiKeyList", {"results": _KeyOutput(many=True)}),
            **_ERRORS,
        },
    )
    def get(self, request: Request, license_id: int) -> Response:
        lic = selectors.license_get_for_buyer(buyer=_user(request), license_id=license_id)
        keys = selectors.api_key_list_for_license(license=lic)
        return Response({"results": self.OutputSerializer(keys, many=True).data})

    @extend_schema(
        operation_id="me_license_keys_create",
        request=InputSerializer,
        responses={201: _KeyCreated, **_ERRORS},
    )
    def post(self, request: Request, license_id: int) -> Response:
        lic = selectors.license_get_for_buyer(buyer=_user(request), license_id=license_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = licenses.api_key_create(license=lic, **data.validated_data)
        key.key = raw  # type: ignore[attr-defined]  # shown in this response only, never stored
        return Response(self.CreatedSerializer(key).data, status=status.HTTP_201_CREATED)


class ApiKeyRotateApi(APIView):
    authentication_classes = ME_AUTHENTICATION  # a personal token or the session
    permission_classes = [IsAuthenticated]

    OutputSerializer = _KeyCreated

    @extend_schema(
        operation_id="me_license_keys_rotate", request=None, responses={201: _KeyCreated, **_ERRORS}
    )
    def post(self, request: Request, license_id: int, key_id: int) -> Response:
        key = selectors.api_key_get_for_buyer(
            buyer=_user(request), license_id=license_id, key_id=key_id
        )
        new, raw = licenses.api_key_rotate(key_id=key.pk)
        new.key = raw  # type: ignore[attr-defined]
        return Response(self.OutputSerializer(new).data, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    authentication_classes = ME_AUTHENTICATION  # a personal token or the session
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ApiKeyRevokeOutput")
    class OutputSerializer(_KeyOutput):
        pass

    @extend_schema(
        operation_id="me_license_keys_revoke", request=None, responses={200: _KeyOutput, **_ERRORS}
    )
    def post(self, request: Request, license_id: int, key_id: int) -> Response:
        key = selectors.api_key_get_for_buyer(
            buyer=_user(request), license_id=license_id, key_id=key_id
        )
        key = licenses.api_key_revoke(key_id=key.pk)
        return Response(self.OutputSerializer(key).data)


# --- creators --------------------------------------------------------------------------------


class CreatorBecomeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="CreatorBecomeInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        handle = serializers.CharField(max_length=50, required=False, default="")
        display_name = serializers.CharField(max_length=100, required=False, default="")

    @extend_schema_serializer(component_name="CreatorBecomeOutput")
    class OutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        handle = serializers.CharField()
        namespace = serializers.CharField()

    @extend_schema(
        operation_id="billing_creator_become",
        request=InputSerializer,
        responses={201: OutputSerializer, **_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        creator = creators.creator_become(user=_user(request), **data.validated_data)
        return Response(self.OutputSerializer(creator).data, status=status.HTTP_201_CREATED)


class CreatorOnboardApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="CreatorOnboardInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        return_url = serializers.URLField()
        refresh_url = serializers.URLField()

    @extend_schema(
        operation_id="billing_creator_onboard",
        request=InputSerializer,
        responses={
            200: inline_serializer("OnboardingLink", {"url": serializers.URLField()}),
            **_ERRORS,
            503: _Error,  # Stripe cannot be reached: Retry-After says when to try again
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        creator = creators.creator_require(user=_user(request))
        url = creators.connect_onboarding_link(creator=creator, **data.validated_data)
        return Response({"url": url})


class CreatorStatementListApi(APIView):
    """The signed-in creator's statement for one month, one row per currency."""

    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer[Any]):
        month = serializers.DateField()
        currency = serializers.CharField()
        sales = serializers.IntegerField()
        gross = serializers.IntegerField()
        platform_fees = serializers.IntegerField()
        refunds = serializers.IntegerField()
        disputes = serializers.IntegerField()
        net = serializers.IntegerField()
        held = serializers.IntegerField(help_text="Share of open disputes, not yet deducted.")

    @extend_schema(
        operation_id="billing_creator_statements",
        parameters=[
            OpenApiParameter("month", str, description="YYYY-MM (UTC); this month if omitted")
        ],
        responses={200: OutputSerializer(many=True), **_ERRORS},
    )
    def get(self, request: Request) -> Response:
        creator = creators.creator_require(user=_user(request))
        raw = request.query_params.get("month") or timezone.now().strftime("%Y-%m")
        try:
            month = datetime.strptime(raw + " +0000", "%Y-%m %z").date()
        except ValueError as exc:
            raise ApplicationError("month is YYYY-MM.") from exc
        rows = selectors.creator_statement_list(creator_id=creator.pk, month=month)
        return Response(self.OutputSerializer(rows, many=True).data)


class ListingClaimStartApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="ListingClaimStartInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        listing = serializers.CharField(max_length=200)
        registry_name = serializers.CharField(max_length=200, required=False, default="")

    @extend_schema(
        operation_id="billing_claims_create",
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "ListingClaim",
                {
                    "id": serializers.IntegerField(),
                    "registry_name": serializers.CharField(),
                    "token": serializers.CharField(),
                    "status": serializers.CharField(),
                    "expires_at": serializers.DateTimeField(),
                    "server_json_meta": serializers.DictField(),
                },
            ),
            **_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        creator = creators.creator_require(user=_user(request))
        listing = get_object_or_404(Listing, name=data.validated_data["listing"])
        claim = claims.claim_start(
            creator=creator, listing=listing, registry_name=data.validated_data["registry_name"]
        )
        return Response(
            {
                "id": claim.pk,
                "registry_name": claim.registry_name,
                "token": claim.token,
                "status": claim.status,
                "expires_at": claim.expires_at,
                "server_json_meta": claims.claim_meta_snippet(claim=claim),
            },
            status=status.HTTP_201_CREATED,
        )


class PlanCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="PlanCreateInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        listing = serializers.CharField(max_length=200)
        kind = serializers.ChoiceField(choices=PlanKind.choices)
        name = serializers.CharField(max_length=100, required=False, default="")
        currency = serializers.CharField(max_length=3, required=False, default="")
        unit_amount = serializers.IntegerField(min_value=0, required=False, default=0)
        per_call_amount = serializers.IntegerField(min_value=0, required=False, default=0)
        overage_amount = serializers.IntegerField(min_value=0, required=False, default=0)
        included_calls = serializers.IntegerField(
            min_value=0, required=False, allow_null=True, default=None
        )
        hard_cap = serializers.BooleanField(required=False, default=False)
        rate_limit_per_minute = serializers.IntegerField(
            min_value=1, max_value=RATE_LIMIT_MAX_PER_MINUTE, required=False, default=60
        )
        tool_prices = serializers.DictField(required=False, default=dict)
        # The upstream's tool names the default price covers; others are refused. Omitted:
        # every tool (billing.pricing).
        tools = serializers.ListField(
            child=serializers.CharField(max_length=128), required=False, max_length=200
        )

    @extend_schema_serializer(component_name="PlanCreateOutput")
    class OutputSerializer(serializers.ModelSerializer[Plan]):
        class Meta:
            model = Plan
            fields = [
                "id",
                "listing",
                "kind",
                "name",
                "currency",
                "rate_limit_per_minute",
                "included_calls",
                "hard_cap",
                "active",
            ]

    @extend_schema(
        operation_id="billing_plans_create",
        request=InputSerializer,
        responses={201: OutputSerializer, **_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        listing = get_object_or_404(Listing, name=fields.pop("listing"))
        plan = plans.plan_create(user=_user(request), listing=listing, **fields)
        return Response(self.OutputSerializer(plan).data, status=status.HTTP_201_CREATED)


class PlanPriceChangeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="PlanPriceChangeInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        unit_amount = serializers.IntegerField(min_value=0, required=False)
        per_call_amount = serializers.IntegerField(min_value=0, required=False)
        overage_amount = serializers.IntegerField(min_value=0, required=False)
        tool_prices = serializers.DictField(required=False)
        tools = serializers.ListField(
            child=serializers.CharField(max_length=128), required=False, max_length=200
        )

    @extend_schema(
        operation_id="billing_plan_prices_create",
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "PlanPriceVersion",
                {
                    "plan": serializers.IntegerField(),
                    "version": serializers.IntegerField(),
                    "effective_at": serializers.DateTimeField(),
                },
            ),
            **_ERRORS,
        },
    )
    def post(self, request: Request, plan_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        plan = get_object_or_404(Plan.objects.select_related("listing"), pk=plan_id)
        price = plans.plan_price_change(user=_user(request), plan=plan, **data.validated_data)
        return Response(
            {"plan": plan.pk, "version": price.version, "effective_at": price.effective_at},
            status=status.HTTP_201_CREATED,
        )


class CheckoutStartApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="CheckoutStartInput")
    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        plan = serializers.IntegerField()

    @extend_schema(
        operation_id="billing_checkout_create",
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "CheckoutStarted",
                {
                    "checkout_url": serializers.URLField(allow_null=True),
                    "license": serializers.IntegerField(allow_null=True),
                },
            ),
            **_ERRORS,
            503: _Error,  # Stripe cannot be reached: Retry-After says when to try again
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        plan = get_object_or_404(Plan, pk=data.validated_data["plan"], active=True)
        success = request.build_absolute_uri("/billing/checkout/success")
        url, lic = checkout.checkout_start(
            buyer=_user(request),
            plan=plan,
            success_url=success + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=request.build_absolute_uri(f"/billing/buy/{plan.pk}"),
        )
        return Response(
            {"checkout_url": url, "license": lic.pk if lic else None},
            status=status.HTTP_201_CREATED,
        )
