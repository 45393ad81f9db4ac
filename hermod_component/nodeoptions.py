"""
Node configuration, subscription options and publish-options as form values.

XEP-0060 carries options in data forms. This module knows the fields (names, types, labels,
choices) and converts between submitted values (C{dict[str, list[str]]}, as a data form yields
them) and the domain values of L{hermod_component.model}. It holds no XML: the XMPP edge renders
the field definitions into forms and hands back the submitted values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from hermod_component import subscriptionoptions
from hermod_component.errors import (
    InvalidOptions,
    InvalidSubscriptionOptions,
    PreconditionNotMet,
    UnsupportedAccessModel,
)
from hermod_component.model import (
    AccessModel,
    NodeConfig,
    NodeType,
    PublishModel,
    SendLastPublished,
)

NS_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
NS_SUBSCRIBE_OPTIONS = "http://jabber.org/protocol/pubsub#subscribe_options"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NS_META_DATA = "http://jabber.org/protocol/pubsub#meta-data"

Values = Mapping[str, Sequence[str]]


@attrs.frozen
class OptionField:
    """
    One field of an options form.

    @ivar fieldType: The XEP-0004 field type (C{boolean}, C{list-single}, C{text-single}).
    @ivar options: C{(value, label)} choices of a list field.
    """

    var: str
    fieldType: str
    label: str
    options: tuple[tuple[str, str], ...] = ()


def _choices(enum: type) -> tuple[tuple[str, str], ...]:
    return tuple((member.value, member.value) for member in enum)  # type: ignore[attr-defined]


NODE_CONFIG_FIELDS: tuple[OptionField, ...] = (
    OptionField("pubsub#title", "text-single", "A friendly name for the node"),
    OptionField("pubsub#description", "text-single", "A description of the node"),
    OptionField("pubsub#type", "text-single", "The type of node data, usually a namespace"),
    OptionField(
        "pubsub#access_model",
        "list-single",
        "Who may subscribe and retrieve items",
        (
            ("open", "Anyone may subscribe and retrieve items"),
            ("whitelist", "Only those on a whitelist may subscribe and retrieve items"),
            ("authorize", "Subscription requests must be approved by an owner"),
        ),
    ),
    OptionField(
        "pubsub#publish_model",
        "list-single",
        "Who may publish items",
        (
            ("publishers", "Only publishers may publish"),
            ("subscribers", "Subscribers may publish"),
            ("open", "Anyone may publish"),
        ),
    ),
    OptionField("pubsub#max_items", "text-single", "Maximum number of items to keep ('max')"),
    OptionField("pubsub#persist_items", "boolean", "Persist items to storage"),
    OptionField("pubsub#deliver_payloads", "boolean", "Deliver payloads with notifications"),
    OptionField("pubsub#deliver_notifications", "boolean", "Deliver event notifications"),
    OptionField("pubsub#notify_retract", "boolean", "Notify subscribers when items are removed"),
    OptionField("pubsub#notify_delete", "boolean", "Notify subscribers when the node is deleted"),
    OptionField(
        "pubsub#notify_config", "boolean", "Notify subscribers when the configuration changes"
    ),
    OptionField(
        "pubsub#send_last_published_item",
        "list-single",
        "When to send the last published item",
        (
            ("never", "Never"),
            ("on_sub", "When a new subscription is processed"),
            ("on_sub_and_presence", "When a new subscription is processed and on presence"),
        ),
    ),
    OptionField("pubsub#item_expire", "text-single", "Seconds after which items expire"),
    OptionField("pubsub#max_payload_size", "text-single", "Maximum payload size in bytes"),
    OptionField(
        "pubsub#notification_type",
        "list-single",
        "Message type of notifications",
        (("headline", "headline"), ("normal", "normal")),
    ),
    OptionField(
        "hermod#archive_max_age", "text-single", "Seconds events stay in the archive (MAM)"
    ),
    OptionField(
        "hermod#archive_max_events", "text-single", "Newest events kept in the archive (MAM)"
    ),
    OptionField(
        "hermod#payload_format",
        "list-single",
        "Payloads this node accepts",
        (
            ("any", "Any XML payload"),
            ("json", "Only XEP-0335 JSON containers holding valid JSON"),
        ),
    ),
    OptionField(
        "pubsub#collection", "text-multi", "The collections this node is in (XEP-0248)"
    ),
    OptionField(
        "pubsub#children", "text-multi", "The nodes in this collection (XEP-0248)"
    ),
)

#: The subscription option holding a subscriber's header filter: C{name=value} pairs, all of
#: which an item's SHIM headers must carry for the item to be delivered.
HEADER_FILTER = "hermod#header_filter"
#: XEP-0248 subscription options of a subscription to a collection node.
SUBSCRIPTION_TYPE = "pubsub#subscription_type"
SUBSCRIPTION_DEPTH = "pubsub#subscription_depth"

SUBSCRIPTION_OPTION_FIELDS: tuple[OptionField, ...] = (
    OptionField("pubsub#deliver", "boolean", "Enable delivery"),
    OptionField(
        HEADER_FILTER,
        "text-multi",
        "Deliver only items whose SHIM headers match every name=value line",
    ),
    OptionField(
        SUBSCRIPTION_TYPE,
        "list-single",
        "What a collection subscription delivers",
        (("items", "Items of the nodes below"), ("nodes", "New and deleted nodes below")),
    ),
    OptionField(
        SUBSCRIPTION_DEPTH,
        "list-single",
        "How deep below the collection",
        (("1", "Its direct children"), ("all", "Every node below")),
    ),
    OptionField(subscriptionoptions.DIGEST, "boolean", "Receive digest notifications"),
    OptionField(
        subscriptionoptions.DIGEST_FREQUENCY,
        "text-single",
        "Milliseconds between digests of notifications",
    ),
    OptionField(
        subscriptionoptions.EXPIRE,
        "text-single",
        "Requested lease period: a dateTime, or 'presence' to end it when you go offline",
    ),
    OptionField(
        subscriptionoptions.INCLUDE_BODY,
        "boolean",
        "Receive message body in addition to payload?",
    ),
    OptionField(
        subscriptionoptions.SHOW_VALUES,
        "list-multi",
        "Deliver only while one of your resources has one of these presence states",
        (
            ("away", "Away"),
            ("chat", "Want to Chat"),
            ("dnd", "Do Not Disturb"),
            ("online", "Available"),
            ("xa", "Extended Away"),
        ),
    ),
)


def subscriptionOptionFields(presence: bool) -> tuple[OptionField, ...]:
    """
    The fields of the subscription options form; C{pubsub#show-values} only for a service
    that tracks its subscribers' presence.
    """
    if presence:
        return SUBSCRIPTION_OPTION_FIELDS
    return tuple(f for f in SUBSCRIPTION_OPTION_FIELDS if f.var != subscriptionoptions.SHOW_VALUES)

_IGNORED = frozenset({"FORM_TYPE"})


def _one(var: str, values: Sequence[str]) -> str:
    if len(values) != 1:
        raise InvalidOptions(f"{var} takes exactly one value")
    return values[0].strip()


def _boolean(var: str, values: Sequence[str]) -> bool:
    value = _one(var, values).lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise InvalidOptions(f"{var} must be a boolean, not {value!r}")


def _count(var: str, text: str, allowZero: bool = True) -> int:
    try:
        number = int(text)
    except ValueError:
        raise InvalidOptions(f"{var} must be a whole number, not {text!r}") from None
    if number < 0 or (number == 0 and not allowZero):
        raise InvalidOptions(f"{var} must be {'0 or ' if allowZero else ''}more, not {number}")
    return number


@attrs.frozen
class ServiceLimits:
    """
    Service-wide bounds applied to node configuration.

    @ivar maxItemsPerNode: The largest C{max_items}; what C{max} means.
    @ivar maxPayloadSize: The largest C{max_payload_size}.
    """

    maxItemsPerNode: int
    maxPayloadSize: int


def configFromValues(values: Values, base: NodeConfig, limits: ServiceLimits) -> NodeConfig:
    """
    Apply submitted node configuration values to C{base}.

    @param values: Field values by C{pubsub#} name; fields not present keep their value.
    @return: The new configuration.
    @raise InvalidOptions: an unknown field or a bad value.
    @raise UnsupportedAccessModel: an access model a component cannot enforce.
    """
    changes: dict[str, Any] = {}
    for var, given in values.items():
        if var in _IGNORED:
            continue
        if var == "pubsub#node_type":
            nodeType = _one(var, given)
            try:
                changes["nodeType"] = NodeType(nodeType)
            except ValueError:
                raise InvalidOptions(
                    f"pubsub#node_type must be leaf or collection, not {nodeType!r}"
                ) from None
            continue
        try:
            attribute, convert = _CONFIG_PARSERS[var]
        except KeyError:
            raise InvalidOptions(f"unknown node configuration field {var}") from None
        changes[attribute] = convert(var, given, limits)
    return attrs.evolve(base, **changes)


def _accessModel(var: str, given: Sequence[str], limits: ServiceLimits) -> AccessModel:
    value = _one(var, given)
    if value in ("presence", "roster"):
        raise UnsupportedAccessModel(
            f"access model {value!r} needs the server's roster, which a component does not see"
        )
    try:
        return AccessModel(value)
    except ValueError:
        raise InvalidOptions(f"{var}: unknown access model {value!r}") from None


def _publishModel(var: str, given: Sequence[str], limits: ServiceLimits) -> PublishModel:
    value = _one(var, given)
    try:
        return PublishModel(value)
    except ValueError:
        raise InvalidOptions(f"{var}: unknown publish model {value!r}") from None


def _sendLast(var: str, given: Sequence[str], limits: ServiceLimits) -> SendLastPublished:
    value = _one(var, given)
    try:
        return SendLastPublished(value)
    except ValueError:
        raise InvalidOptions(f"{var}: unknown value {value!r}") from None


def _maxItems(var: str, given: Sequence[str], limits: ServiceLimits) -> int | None:
    value = _one(var, given)
    if value == "max":
        return None
    number = _count(var, value, allowZero=False)
    if number > limits.maxItemsPerNode:
        raise InvalidOptions(f"{var} may be at most {limits.maxItemsPerNode}, not {number}")
    return number


def _itemExpire(var: str, given: Sequence[str], limits: ServiceLimits) -> int | None:
    value = _one(var, given) if given else ""
    if value in ("", "0", "never"):
        return None
    return _count(var, value, allowZero=False)


def _maxPayload(var: str, given: Sequence[str], limits: ServiceLimits) -> int | None:
    value = _one(var, given) if given else ""
    if value in ("", "max"):
        return None
    number = _count(var, value, allowZero=False)
    if number > limits.maxPayloadSize:
        raise InvalidOptions(f"{var} may be at most {limits.maxPayloadSize}, not {number}")
    return number


def _optionalCount(var: str, given: Sequence[str], limits: ServiceLimits) -> int | None:
    value = _one(var, given) if given else ""
    if value in ("", "max", "never"):
        return None
    return _count(var, value, allowZero=True)


def _text(var: str, given: Sequence[str], limits: ServiceLimits) -> str:
    return "\n".join(given)


def _notificationType(var: str, given: Sequence[str], limits: ServiceLimits) -> str:
    value = _one(var, given)
    if value not in ("headline", "normal"):
        raise InvalidOptions(f"{var} must be headline or normal, not {value!r}")
    return value


def _flag(var: str, given: Sequence[str], limits: ServiceLimits) -> bool:
    return _boolean(var, given)


def _nodeList(var: str, given: Sequence[str], limits: ServiceLimits) -> tuple[str, ...]:
    """
    The node names of a C{text-multi} field, stripped, without blanks or repeats, in order.
    """
    names: dict[str, None] = {}
    for value in given:
        for line in value.splitlines():
            if line.strip():
                names[line.strip()] = None
    return tuple(names)


def _payloadFormat(var: str, given: Sequence[str], limits: ServiceLimits) -> str:
    value = _one(var, given)
    if value not in ("any", "json"):
        raise InvalidOptions(f"{var} must be any or json, not {value!r}")
    return value


_CONFIG_PARSERS: dict[str, tuple[str, Callable[[str, Sequence[str], ServiceLimits], object]]] = {
    "pubsub#title": ("title", _text),
    "pubsub#description": ("description", _text),
    "pubsub#type": ("payloadType", _text),
    "pubsub#access_model": ("accessModel", _accessModel),
    "pubsub#publish_model": ("publishModel", _publishModel),
    "pubsub#max_items": ("maxItems", _maxItems),
    "pubsub#persist_items": ("persistItems", _flag),
    "pubsub#deliver_payloads": ("deliverPayloads", _flag),
    "pubsub#deliver_notifications": ("deliverNotifications", _flag),
    "pubsub#notify_retract": ("notifyRetract", _flag),
    "pubsub#notify_delete": ("notifyDelete", _flag),
    "pubsub#notify_config": ("notifyConfig", _flag),
    "pubsub#send_last_published_item": ("sendLastPublishedItem", _sendLast),
    "pubsub#item_expire": ("itemExpire", _itemExpire),
    "pubsub#max_payload_size": ("maxPayloadSize", _maxPayload),
    "pubsub#notification_type": ("notificationType", _notificationType),
    "hermod#archive_max_age": ("archiveMaxAge", _optionalCount),
    "hermod#archive_max_events": ("archiveMaxEvents", _optionalCount),
    "hermod#payload_format": ("payloadFormat", _payloadFormat),
    "pubsub#collection": ("collections", _nodeList),
    "pubsub#children": ("children", _nodeList),
}


def valuesFromConfig(config: NodeConfig) -> dict[str, list[str]]:
    """
    The configuration as form values, one entry per field of L{NODE_CONFIG_FIELDS}.
    """

    def flag(value: bool) -> list[str]:
        return ["1" if value else "0"]

    return {
        "pubsub#title": [config.title],
        "pubsub#description": [config.description],
        "pubsub#type": [config.payloadType],
        "pubsub#access_model": [config.accessModel.value],
        "pubsub#publish_model": [config.publishModel.value],
        "pubsub#max_items": ["max" if config.maxItems is None else str(config.maxItems)],
        "pubsub#persist_items": flag(config.persistItems),
        "pubsub#deliver_payloads": flag(config.deliverPayloads),
        "pubsub#deliver_notifications": flag(config.deliverNotifications),
        "pubsub#notify_retract": flag(config.notifyRetract),
        "pubsub#notify_delete": flag(config.notifyDelete),
        "pubsub#notify_config": flag(config.notifyConfig),
        "pubsub#send_last_published_item": [config.sendLastPublishedItem.value],
        "pubsub#item_expire": ["" if config.itemExpire is None else str(config.itemExpire)],
        "pubsub#max_payload_size": [
            "" if config.maxPayloadSize is None else str(config.maxPayloadSize)
        ],
        "pubsub#notification_type": [config.notificationType],
        "hermod#archive_max_age": _optional(config.archiveMaxAge),
        "hermod#archive_max_events": _optional(config.archiveMaxEvents),
        "hermod#payload_format": [config.payloadFormat],
        "pubsub#collection": list(config.collections),
        "pubsub#children": list(config.children),
    }


def _optional(value: int | None) -> list[str]:
    return [""] if value is None else [str(value)]


#: The publish-options field (C{text-multi}, one C{name=value} per line) whose SHIM headers are
#: attached to every item of the publish; not a precondition.
PUBLISH_HEADERS = "hermod#headers"


def splitPublishHeaders(values: Values) -> tuple[dict[str, Sequence[str]], tuple[tuple[str, str], ...]]:
    """
    Take the C{hermod#headers} field out of submitted publish-options.

    @return: The remaining publish-options (the preconditions) and the headers, as
        C{(name, value)} pairs in the order given, names stripped, values kept exactly.
    @raise InvalidOptions: a line without C{=} or with an empty name.
    """
    rest = {var: given for var, given in values.items() if var != PUBLISH_HEADERS}
    headers = []
    for line in values.get(PUBLISH_HEADERS, ()):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise InvalidOptions(f"{PUBLISH_HEADERS} lines are name=value, not {line!r}")
        headers.append((name.strip(), value))
    return rest, tuple(headers)


def checkPreconditions(values: Values, config: NodeConfig) -> None:
    """
    Check publish-options against the node's configuration (XEP-0060 7.1.5).

    @raise PreconditionNotMet: a field is unknown or its value differs from the node's.
    """
    current = valuesFromConfig(config)
    for var, given in values.items():
        if var in _IGNORED:
            continue
        if var not in current:
            raise PreconditionNotMet(f"unknown publish option {var}")
        want = [value.strip() for value in given]
        have = current[var]
        if _CONFIG_PARSERS[var][1] is _flag:
            try:
                matches = _boolean(var, want) == (have == ["1"])
            except InvalidOptions:
                matches = False
        else:
            matches = want == have
        if not matches:
            raise PreconditionNotMet(f"{var} is {have[0] if have else ''!r}, not {want!r}")


def subscriptionOptionsFromValues(values: Values) -> dict[str, tuple[str, ...]]:
    """
    Validate submitted subscription options.

    @return: The options to store, keyed by field name.
    @raise InvalidSubscriptionOptions: an unknown field or a bad value.
    """
    options: dict[str, tuple[str, ...]] = {}
    for var, given in values.items():
        if var in _IGNORED:
            continue
        if var == "pubsub#deliver":
            try:
                options[var] = ("1" if _boolean(var, given) else "0",)
            except InvalidOptions as e:
                raise InvalidSubscriptionOptions(str(e)) from None
        elif var in (SUBSCRIPTION_TYPE, SUBSCRIPTION_DEPTH):
            allowed = ("items", "nodes") if var == SUBSCRIPTION_TYPE else ("1", "all")
            try:
                value = _one(var, given)
            except InvalidOptions as e:
                raise InvalidSubscriptionOptions(str(e)) from None
            if value not in allowed:
                raise InvalidSubscriptionOptions(
                    f"{var} must be {' or '.join(allowed)}, not {value!r}"
                )
            options[var] = (value,)
        elif var == HEADER_FILTER:
            pairs = headerFilterFromValues(given)
            if pairs:
                options[var] = pairs
        elif var in subscriptionoptions.PARSERS:
            parsed = subscriptionoptions.PARSERS[var](var, given)
            if parsed:
                options[var] = parsed
        else:
            raise InvalidSubscriptionOptions(f"unsupported subscription option {var}")
    return options


def subscriptionOptionValues(options: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """
    Stored subscription options as form values, with defaults for fields not set.
    """
    return {
        "pubsub#deliver": list(options.get("pubsub#deliver", ("1",))),
        HEADER_FILTER: list(options.get(HEADER_FILTER, ())),
        SUBSCRIPTION_TYPE: list(options.get(SUBSCRIPTION_TYPE, ("items",))),
        SUBSCRIPTION_DEPTH: list(options.get(SUBSCRIPTION_DEPTH, ("1",))),
        **subscriptionoptions.defaultValues(options),
    }


def headerFilterFromValues(given: Sequence[str]) -> tuple[str, ...]:
    """
    Validate the lines of a C{hermod#header_filter}: each C{name=value}, the name not empty.
    Blank lines are dropped, and the name loses surrounding white space; the value is kept as
    given, since header values are compared exactly.

    @return: The pairs as normalized C{name=value} strings, without duplicates, in the order
        given; what L{headerKeys} produces for an item's headers, so a match is a set test.
    @raise InvalidSubscriptionOptions: a line without C{=} or with an empty name.
    """
    pairs: dict[str, None] = {}
    for line in given:
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidSubscriptionOptions(
                f"{HEADER_FILTER} lines are name=value, not {line!r}"
            )
        pairs[f"{name}={value}"] = None
    return tuple(pairs)


def headerKeys(headers: Sequence[tuple[str, str]]) -> frozenset[str]:
    """
    An item's SHIM headers as the C{name=value} strings a header filter names.
    """
    return frozenset(f"{name}={value}" for name, value in headers)


def wantsDelivery(options: Mapping[str, Sequence[str]]) -> bool:
    """
    Whether a subscription with these options receives notifications.
    """
    return tuple(options.get("pubsub#deliver", ("1",))) != ("0",)
