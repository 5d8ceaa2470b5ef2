"""Live conversations API: start one, send a message (its two answers are
written on a gpu worker; poll the conversation for their text as it is
streamed), pick an answer, retry a failed turn. Everything an annotator sees
is blind: answers are ``left`` and ``right``, never the versions."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import IsAnnotator
from core.schema import ApiAutoSchema, error
from labeling import selectors
from labeling.models import Conversation, ConversationTurn
from labeling.selectors import conversations as conversation_selectors
from labeling.services import conversations as conversation_services
from labeling.services.queue import SCREEN_CHOICES


class ConversationTurnSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="1 for the first turn.")
    status = serializers.ChoiceField(
        choices=ConversationTurn.Status.choices,
        help_text="queued, generating (answers streaming), ready (pick one), "
        "failed (retry), answered.",
    )
    user_message = serializers.CharField()
    left = serializers.CharField(help_text="The left answer, as written so far.")
    right = serializers.CharField(help_text="The right answer, as written so far.")
    writing = serializers.CharField(
        help_text="The answer being written now: left, right or empty."
    )
    error = serializers.CharField(help_text="Why the answers could not be written.")
    retryable = serializers.BooleanField(
        help_text="Failed, or stalled for a minute: POST its retry."
    )
    choice = serializers.CharField(
        help_text="Answered turns: left, right, tie or both_bad (screen sides)."
    )
    chosen = serializers.CharField(
        help_text="Answered turns: the answer that carries the conversation on."
    )


class ConversationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Conversation.Status.choices)
    turn_limit = serializers.IntegerField()
    can_send = serializers.BooleanField(help_text="A message may be sent now.")
    messages = serializers.JSONField(
        help_text="The conversation so far (answered turns) as chat messages."
    )
    turns = ConversationTurnSerializer(many=True)


def _conversation_data(conversation: Conversation) -> dict[str, Any]:
    turns = conversation_selectors.conversation_turn_rows(conversation=conversation)
    return {
        "id": conversation.pk,
        "campaign_id": conversation.campaign_id,
        "status": conversation.status,
        "turn_limit": conversation.turn_limit,
        "can_send": conversation_selectors.can_send(
            conversation, [t["status"] for t in turns]
        ),
        "messages": conversation_services.conversation_thread(
            conversation=conversation
        ),
        "turns": turns,
    }


def _respond(conversation: Conversation, code: int = status.HTTP_200_OK) -> Response:
    conversation.refresh_from_db(fields=["status"])
    return Response(
        ConversationSerializer(_conversation_data(conversation)).data, status=code
    )


def _get(request: Request, conversation_id: int) -> Conversation:
    return conversation_selectors.conversation_get_for_annotator(
        annotator=request.user, conversation_id=conversation_id
    )


class ConversationCreateApi(APIView):
    """Start a live conversation in a campaign that has them on."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            201: ConversationSerializer,
            400: error("Live conversations are off, or the campaign is not active."),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.campaign_get_for_annotator(
            user=request.user, campaign_id=campaign_id
        )
        conversation = conversation_services.conversation_start(
            campaign=campaign, annotator=request.user
        )
        return _respond(conversation, status.HTTP_201_CREATED)


class ConversationDetailApi(APIView):
    """One of your conversations with every turn; poll it while a turn is
    ``queued`` or ``generating`` (the answers' text grows as it is written)."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: ConversationSerializer})
    def get(self, request: Request, conversation_id: int) -> Response:
        return _respond(_get(request, conversation_id))


class ConversationMessageApi(APIView):
    """Send the next message: a new turn whose two answers are queued on the
    gpu worker. Refused (409) while the last turn waits for answers or a pick."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="ConversationMessageInput")
    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(
            max_length=conversation_services.MESSAGE_MAX_CHARS,
            help_text="What you say to the assistants.",
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            202: ConversationSerializer,
            400: error("An empty message, or the conversation is finished."),
            409: error("The last turn waits for its answers or your pick."),
        },
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = _get(request, conversation_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation_services.conversation_message_send(
            conversation=conversation, text=serializer.validated_data["text"]
        )
        return _respond(conversation, status.HTTP_202_ACCEPTED)


class ConversationTurnChoiceApi(APIView):
    """Pick an answer of a ready turn (screen sides, as the turn lists them);
    recorded as a preference whose prompt is the conversation before the
    answers, and the picked answer joins the conversation. Idempotent."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="ConversationChoiceInput")
    class InputSerializer(serializers.Serializer):
        choice = serializers.ChoiceField(choices=SCREEN_CHOICES)
        strength = serializers.IntegerField(
            min_value=-3,
            max_value=3,
            required=False,
            allow_null=True,
            help_text="-3 (left much better) .. 3 (right much better).",
        )
        rationale = serializers.CharField(
            max_length=1000, required=False, allow_blank=True
        )
        time_spent_ms = serializers.IntegerField(
            min_value=0, max_value=86_400_000, required=False, allow_null=True
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            200: ConversationSerializer,
            409: error("The turn's answers are not written yet."),
        },
    )
    def post(self, request: Request, conversation_id: int, number: int) -> Response:
        conversation = _get(request, conversation_id)
        turn = conversation_selectors.conversation_turn_get(
            conversation=conversation, number=number
        )
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        conversation_services.conversation_turn_choose(
            turn=turn,
            annotator=request.user,
            choice=data["choice"],
            strength=data.get("strength"),
            rationale=data.get("rationale", ""),
            time_spent_ms=data.get("time_spent_ms"),
        )
        return _respond(conversation)


class ConversationTurnRetryApi(APIView):
    """Write a failed (or stalled) turn's answers again; the conversation
    before it and the message are kept."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            202: ConversationSerializer,
            409: error("The turn is being written or has its answers."),
        },
    )
    def post(self, request: Request, conversation_id: int, number: int) -> Response:
        conversation = _get(request, conversation_id)
        turn = conversation_selectors.conversation_turn_get(
            conversation=conversation, number=number
        )
        conversation_services.conversation_turn_retry(turn=turn)
        return _respond(conversation, status.HTTP_202_ACCEPTED)
