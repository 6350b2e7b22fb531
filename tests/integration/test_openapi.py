"""The OpenAPI document: it covers exactly the registered routes, is valid OpenAPI 3.1 and is
served without auth at ``GET /openapi.json``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
import schemathesis
from schemathesis.core.result import Err

from tests.support.service import Start
from tokensvc.config import Settings
from tokensvc.web.app import create_app
from tokensvc.web.openapi import SPEC
from tokensvc.wechat.messages import MESSAGE_ROUTES, BodyError

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
PASSTHROUGH_METHODS = ("get", "post")
"""The passthrough is registered for any method (``*``); it forwards GET and POST, 405 else."""


def registered_operations(settings: Settings) -> set[tuple[str, str]]:
    """``(path, method)`` of every route ``create_app`` registers, in OpenAPI's spelling."""
    operations: set[tuple[str, str]] = set()
    for route in create_app(settings).router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET route
            continue
        assert route.resource is not None
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical)  # {path:.+}
        methods = PASSTHROUGH_METHODS if route.method == "*" else (route.method.lower(),)
        operations.update((path, method) for method in methods)
    return operations


def documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_registered_route_is_documented_and_nothing_else(
    make_settings: Callable[..., Settings],
) -> None:
    registered = registered_operations(make_settings())
    documented = documented_operations()
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented operations that are not routes"
    assert ("/v1/apps/{appid}/wechat/{path}", "post") in registered  # the `*` route was mapped


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) of a document."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{key.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def schema_objects(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every Schema Object: components, parameters, bodies, responses and their headers."""
    for name, schema in document["components"]["schemas"].items():
        yield f"#/components/schemas/{name}", schema
    for where, node in walk(document):
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            yield f"{where}/schema", node["schema"]


def assert_valid_openapi_31(document: dict[str, Any]) -> None:
    """Valid against the OAS 3.1 meta-schema (bundled with schemathesis), every Schema Object
    valid JSON Schema 2020-12, every ``$ref`` resolvable, and loadable by schemathesis."""
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert document["openapi"].startswith("3.1.")
    validator = jsonschema_rs.Draft202012Validator(OPENAPI_31)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == [], "\n".join(errors[:20])

    for where, schema in schema_objects(document):
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            raise AssertionError(f"{where} is not a valid JSON Schema: {exc}") from None

    refs = [node["$ref"] for _, node in walk(document) if isinstance(node, dict) and "$ref" in node]
    assert refs, "expected component references"
    for ref in refs:
        try:
            resolve(document, ref)
        except KeyError:
            raise AssertionError(f"dangling $ref {ref}") from None

    loaded = schemathesis.openapi.from_dict(json.loads(json.dumps(document)))
    labels = []
    for result in loaded.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"schemathesis cannot load an operation: {result.err()}")
        labels.append(result.ok().label)
    assert len(labels) == len(documented_operations())


def test_the_document_is_valid_openapi_31() -> None:
    assert_valid_openapi_31(SPEC)


def test_an_invalid_document_is_caught() -> None:
    """The validation above is not vacuous."""
    broken = json.loads(json.dumps(SPEC))
    broken["paths"]["/healthz"]["get"]["responses"]["200"].pop("description")
    try:
        assert_valid_openapi_31(broken)
    except AssertionError:
        pass
    else:
        raise AssertionError("a response without a description passed as valid")
    dangling = json.loads(json.dumps(SPEC))
    dangling["components"]["schemas"].pop("Token")
    try:
        assert_valid_openapi_31(dangling)
    except AssertionError:
        pass
    else:
        raise AssertionError("a dangling $ref passed as valid")


def validator(schema: Any) -> Any:
    """A JSON Schema 2020-12 validator of ``schema`` whose ``#/components/...`` refs resolve."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    root["components"] = SPEC["components"]
    return jsonschema_rs.Draft202012Validator(root)


def test_every_example_is_valid_and_message_examples_pass_the_server_validators() -> None:
    checked = 0
    for where, node in walk(SPEC):
        if not isinstance(node, dict) or not isinstance(node.get("examples"), dict):
            continue
        if "schema" not in node:  # a Schema Object's own `examples` list is not this
            continue
        for name, example in node["examples"].items():
            errors = [e.message for e in validator(node["schema"]).iter_errors(example["value"])]
            assert errors == [], f"{where}/examples/{name}: {errors}"
            checked += 1
    assert checked >= 8

    body = SPEC["paths"]["/v1/apps/{appid}/messages/{route}"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]
    assert set(examples) == set(MESSAGE_ROUTES)
    for route, example in examples.items():
        MESSAGE_ROUTES[route].validate(example["value"])  # BodyError if the server refuses it
        own_schema = {"$ref": f"#/components/schemas/{SCHEMA_OF_ROUTE[route]}"}
        assert validator(own_schema).is_valid(example["value"]), route


SCHEMA_OF_ROUTE = {
    "template": "TemplateMessage",
    "subscribe": "SubscribeMessage",
    "custom": "CustomMessage",
    "wxopen-template": "WxopenTemplateMessage",
}


def test_the_message_schemas_refuse_what_the_server_refuses() -> None:
    """A few bodies the validators in ``tokensvc.wechat.messages`` refuse, refused here too."""
    bad: dict[str, list[dict[str, Any]]] = {
        "template": [
            {"touser": "o", "template_id": "t", "data": {}},
            {"touser": "", "template_id": "t", "data": {"k": {"value": "v"}}},
            {"touser": "o", "template_id": "t", "data": {"k": {"value": 1}}},
            {"touser": "o", "template_id": "t", "data": {"k": {"value": "v", "x": "y"}}},
            {"touser": "o", "template_id": "t", "data": {"k": {"value": "v"}}, "url": None},
            {"touser": "o", "template_id": "t", "data": {"k": {"value": "v"}}, "access_token": ""},
        ],
        "subscribe": [
            {"touser": "o", "template_id": "t", "data": {"k": {"value": "v", "color": "#000"}}},
            {"touser": "o", "template_id": "t", "data": {"k": {"value": "v"}}, "lang": "fr"},
        ],
        "custom": [
            {"touser": "o", "msgtype": "text", "text": {"content": ""}},
            {"touser": "o", "msgtype": "image", "image": {"media_id": None}},
            {"touser": "o", "msgtype": "link", "link": {"title": "t"}},
            {"touser": "o", "msgtype": "fax", "fax": {}},
            {"touser": "o", "msgtype": "text"},
        ],
        "wxopen-template": [{"touser": "o", "template_id": "t", "data": {"k": {"value": "v"}}}],
    }
    for route, bodies in bad.items():
        schema = validator({"$ref": f"#/components/schemas/{SCHEMA_OF_ROUTE[route]}"})
        for body in bodies:
            try:
                MESSAGE_ROUTES[route].validate(body)
            except BodyError:
                pass
            else:
                assert "access_token" in body, (route, body)  # refused by the handler itself
            assert not schema.is_valid(body), (route, body)


def test_every_operation_names_its_security_and_answers_errors_with_the_error_body() -> None:
    public = {"/healthz", "/readyz", "/openapi.json", "/wechat/push/{appid}"}  # WeChat signs
    operator = {"/status", "/v1/status", "/metrics"}
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            security = operation["security"]
            if operation["tags"] == ["wechat"]:
                # WeChat's shapes: the client key comes as `secret`, or an issued access_token
                # in the query; errors are WeChat's {"errcode", "errmsg"}
                assert security == [], path
                continue
            if path in public:
                assert security == [], path
            elif path in operator or path.endswith(
                ("/token/rotate", "/token/revoke", "/push/redeliver")
            ):
                assert security == [{"bearer": []}, {"basic": []}], path
            else:
                assert security == [{"bearer": []}], path
            for status, response in operation["responses"].items():
                if int(status) < 400 or path == "/readyz":
                    continue
                component = resolve(SPEC, response["$ref"])
                schema = component["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


async def test_openapi_json_is_served_without_auth(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await start_service(make_settings())
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert document == json.loads(json.dumps(SPEC))
    assert_valid_openapi_31(document)
