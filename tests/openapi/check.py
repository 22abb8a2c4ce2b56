#!/usr/bin/env python3
"""External check of weir's OpenAPI document against a live `weir serve`.

Usage: python check.py BASE_URL TOKEN WORKDIR

The server must already hold a table `account` (columns `name` text and
`creditlimit` decimal) and a workflow plug-in `notify`; WORKDIR is a scratch
directory (the document and the generated client are written there).

What it checks, and why:

 1. The document at BASE_URL/api/openapi.json is a valid OpenAPI 3.1 document
    (openapi-spec-validator). Nothing below means anything otherwise.
 2. The document is complete enough for a client to be generated from it:
    every operation has an operationId, every 2xx response that has a body
    declares an `application/json` schema (a 204 has no body), and every
    request body declares a schema: a JSON body a schema that says something
    about its shape, a non-JSON body (the plug-in upload, application/wasm) a
    binary string. All the gaps are listed, not just the first.
 3. A third-party generator (openapi-python-client) turns the document into a
    Python client without warnings, and that client works: it creates a record,
    reads it back, submits a background operation and reads the job, parsing
    each answer into the generated models (the job's `id` and `status` are read
    as model attributes). Operations are found by operationId, by scanning the
    generated package's api/ directory, not by assuming its layout.
 4. What the server really answers matches what the document says: raw answers
    of the main GET endpoints, of writes (a bulk dry run, job actions, a
    table, a step, a batch) and of errors (404, 400, 409) are validated with jsonschema
    (Draft 2020-12) against the documented schema, looked up generically as
    paths[template][method].responses[status].content["application/json"].schema,
    with the whole document as the resource so `#/components/schemas/...`
    references resolve.
 5. One JSON line on stdout sums it up; diagnostics go to stderr. The exit code
    is 0 only if every check passed (1 if one failed, 2 on bad usage).
"""

import importlib
import json
import subprocess
import sys
import typing
from pathlib import Path
from urllib.parse import quote

try:
    import httpx
    import jsonschema
    import referencing
    import referencing.jsonschema
    from openapi_spec_validator import OpenAPIV31SpecValidator
except ImportError as missing:
    sys.exit(f"check.py: {missing}; install its packages first: pip install -r {Path(__file__).parent / 'requirements.txt'}")

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# The package name the client is generated under (WORKDIR/weir_client); a
# distinctive name so importing it cannot pick up some other `client` module.
CLIENT_PACKAGE = "weir_client"

# The URI the OpenAPI document is registered under for jsonschema; references
# inside it (`#/components/schemas/X`) resolve against it.
DOC_URI = "urn:weir:openapi.json"

# Generator settings. A plug-in upload is application/wasm, a content type
# openapi-python-client does not know: it skips the operation with a warning.
# Mapped onto application/octet-stream it is generated as a binary body
# (`File`), provided the schema is `type: string, format: binary`.
# No post hooks: the generator would otherwise format its output with ruff,
# which this check does not need (and a missing ruff is only a warning).
GENERATOR_CONFIG = {
    "content_type_overrides": {"application/wasm": "application/octet-stream"},
    "post_hooks": [],
}

# Statuses a freshly submitted background operation's job may have: it waits
# for its `at` time (+1h), whichever of the two names the server uses for that.
WAITING_STATUSES = ("WaitingForResources", "Waiting")


def log(message=""):
    """Diagnostics go to stderr; stdout carries only the summary line."""
    print(message, file=sys.stderr, flush=True)


def short(value, limit=300):
    """A one-line, bounded rendering of a value for messages."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Checker:
    def __init__(self, base_url, token, workdir):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.workdir = Path(workdir).resolve()
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
        self.doc = None
        self.failures = []  # (check, message): everything that failed
        # The summary line; every key is present (null where its check did not get that far).
        self.summary = dict.fromkeys(
            ("valid", "operations", "missing_schemas", "generated_client", "record_id",
             "job_id", "job_status", "response_mismatches", "failures", "passed"))
        self.summary["valid"] = False

    def fail(self, check, message):
        self.failures.append((check, message))
        log(f"FAIL [{check}] {message}")

    # ------------------------------------------------------------------
    # Helpers over the document
    # ------------------------------------------------------------------

    def operations(self):
        """(path template, method, operation) for every operation."""
        for template, item in self.doc.get("paths", {}).items():
            for method in HTTP_METHODS:
                if method in item:
                    yield template, method, item[method]

    def deref(self, node):
        """Follows a local `$ref` (`#/components/...`) to what it names."""
        seen = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                return None
            seen.add(ref)
            target = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    return None
                target = target[part]
            node = target
        return node

    def describes_shape(self, schema, seen=()):
        """Whether a JSON schema says something about the value's shape.

        `{"type": "object"}` alone (what utoipa writes for `value_type = Object`
        or `body = Object`) and `{}` say nothing: the generator makes an empty
        model of them and nothing can be validated. A schema describes a shape
        when it has properties, a oneOf/anyOf/allOf, an enum or const, is a
        scalar type, is an array of described items, or deliberately declares a
        free-form object through `additionalProperties` (utoipa writes
        `additionalProperties: {}` for a HashMap<String, Value>). A `$ref` is
        followed to the schema it names.
        """
        if not isinstance(schema, dict):
            return False
        ref = schema.get("$ref")
        if ref is not None:
            if ref in seen:
                return True  # a recursive schema; its other branches decide
            return self.describes_shape(self.deref(schema), seen + (ref,))
        structural = (
            "properties", "additionalProperties", "patternProperties",
            "oneOf", "anyOf", "allOf", "enum", "const",
        )
        if any(key in schema for key in structural):
            return True
        types = schema.get("type")
        types = types if isinstance(types, list) else [types] if types else []
        types = [t for t in types if t != "null"]
        if not types:
            return False
        if "array" in types:
            return self.describes_shape(schema.get("items"), seen) or "prefixItems" in schema
        return "object" not in types

    @staticmethod
    def is_json(media_type):
        media_type = media_type.split(";")[0].strip().lower()
        return media_type == "application/json" or media_type.endswith("+json")

    def response_schema(self, template, method, status):
        """paths[template][method].responses[status].content[application/json].schema,
        or None where the document has none."""
        response = (
            self.doc.get("paths", {}).get(template, {}).get(method, {})
            .get("responses", {}).get(str(status))
        )
        response = self.deref(response)
        if not isinstance(response, dict):
            return None
        return response.get("content", {}).get("application/json", {}).get("schema")

    # ------------------------------------------------------------------
    # 1. Fetch the document and validate it as OpenAPI 3.1
    # ------------------------------------------------------------------

    def check_document(self):
        url = "/api/openapi.json"
        try:
            response = self.http.get(url)
        except httpx.HTTPError as error:
            self.fail("fetch", f"GET {self.base_url}{url}: {error}")
            return False
        if response.status_code != 200:
            self.fail("fetch", f"GET {url} answered {response.status_code}: {short(response.text)}")
            return False
        try:
            self.doc = response.json()
        except ValueError as error:
            self.fail("fetch", f"GET {url} is not JSON: {error}")
            return False
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "openapi.json").write_text(json.dumps(self.doc, indent=2))

        version = str(self.doc.get("openapi", ""))
        if not version.startswith("3.1"):
            self.fail("spec", f"the document is OpenAPI {version or '(no version)'}, expected 3.1")
            return False
        try:
            errors = list(OpenAPIV31SpecValidator(self.doc).iter_errors())
        except Exception as error:  # e.g. a $ref to nowhere stops the validator
            self.fail("spec", f"the validator could not read the document: {type(error).__name__}: {short(str(error))}")
            return False
        for error in errors:
            where = "/".join(str(p) for p in getattr(error, "absolute_path", []) or [])
            self.fail("spec", f"invalid OpenAPI 3.1 at '{where or '(root)'}': {short(error.message)}")
        self.summary["valid"] = not errors
        self.summary["operations"] = sum(1 for _ in self.operations())
        if not errors:
            log(f"ok   [spec] valid OpenAPI {version}, {self.summary['operations']} operations")
        return not errors

    # ------------------------------------------------------------------
    # 2. Every body is described by a schema
    # ------------------------------------------------------------------

    def check_completeness(self):
        missing = []  # one line per gap, all reported together
        operation_ids = {}
        for template, method, operation in self.operations():
            name = f"{method.upper()} {template}"
            op_id = operation.get("operationId")
            if not op_id:
                missing.append(f"{name}: no operationId (the generated client names it by guesswork)")
            elif op_id in operation_ids:
                missing.append(f"{name}: operationId {op_id!r} also used by {operation_ids[op_id]}")
            else:
                operation_ids[op_id] = name
            label = f"{name} ({op_id})"

            # Responses: a 2xx other than 204 carries a body, which must be
            # JSON with a schema unless it declares another media type.
            for status, response in operation.get("responses", {}).items():
                if not str(status).startswith("2"):
                    continue
                response = self.deref(response)
                if not isinstance(response, dict):
                    missing.append(f"{label}: response {status} is an unresolvable $ref")
                    continue
                content = response.get("content") or {}
                if str(status) == "204":
                    if content:
                        missing.append(f"{label}: response 204 declares a body ({', '.join(content)})")
                    continue
                if not content:
                    missing.append(f"{label}: response {status} has no content (expected application/json with a schema)")
                    continue
                for media_type, media in content.items():
                    if not self.is_json(media_type):
                        continue  # a non-JSON answer is not described by a JSON schema
                    schema = (media or {}).get("schema")
                    if schema is None:
                        missing.append(f"{label}: response {status} {media_type} has no schema")
                    elif not self.describes_shape(schema):
                        missing.append(f"{label}: response {status} {media_type} schema is a placeholder: {short(schema, 120)}")

            # Request body: JSON bodies need a schema with a shape; a non-JSON
            # body (the plug-in upload) must be a binary string, the only form
            # the generator turns into a usable body parameter (`File`).
            if "requestBody" in operation:
                body = self.deref(operation["requestBody"])
                content = (body or {}).get("content") or {}
                if not content:
                    missing.append(f"{label}: request body has no content")
                for media_type, media in content.items():
                    schema = (media or {}).get("schema")
                    if schema is None:
                        missing.append(f"{label}: request body {media_type} has no schema")
                    elif self.is_json(media_type):
                        if not self.describes_shape(schema):
                            missing.append(f"{label}: request body {media_type} schema is a placeholder: {short(schema, 120)}")
                    else:
                        resolved = self.deref(schema) or {}
                        if not (resolved.get("type") == "string" and resolved.get("format") == "binary"):
                            missing.append(
                                f"{label}: request body {media_type} should be "
                                f'{{"type": "string", "format": "binary"}}, is {short(schema, 120)}'
                            )

        self.summary["missing_schemas"] = len(missing)
        for line in missing:
            self.fail("schemas", line)
        if not missing:
            log("ok   [schemas] every operation has an operationId and every body a schema")

    # ------------------------------------------------------------------
    # 3. Generate a client and use it
    # ------------------------------------------------------------------

    def generate_client(self):
        """Runs openapi-python-client on the fetched document; returns the
        imported package, or None."""
        out = self.workdir / CLIENT_PACKAGE
        config = self.workdir / "generator-config.json"
        config.write_text(json.dumps(GENERATOR_CONFIG))
        command = [
            sys.executable, "-m", "openapi_python_client", "generate",
            "--path", str(self.workdir / "openapi.json"),
            "--output-path", str(out),
            "--meta", "none",
            "--config", str(config),
            "--overwrite",
        ]
        log("run  " + " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or not (out / "__init__.py").exists():
            self.fail("generate", f"openapi-python-client exited {result.returncode}:\n{output}")
            return None
        # A warning means part of the API was left out of the client or
        # generated wrongly (e.g. an unsupported content type or a schema it
        # could not parse): each is a failure, reported verbatim.
        if "Warning(s) encountered" in output:
            warnings = [line for line in output.splitlines()
                        if line.strip() and "If you believe this was a mistake" not in line]
            self.fail("generate", "openapi-python-client warned:\n  " + "\n  ".join(warnings[1:]))
        self.summary["generated_client"] = str(out)

        sys.path.insert(0, str(self.workdir))
        importlib.invalidate_caches()
        try:
            return importlib.import_module(CLIENT_PACKAGE)
        except Exception as error:  # the generated code itself is broken
            self.fail("generate", f"importing the generated client failed: {error!r}")
            return None

    def find_operations(self, package):
        """operationId -> generated module, by scanning the package's api/ tree.
        The generator names each module after the snake-cased operationId and
        puts it under a directory per tag (`default` without one)."""
        api_dir = Path(package.__file__).parent / "api"
        modules = {}
        for path in sorted(api_dir.rglob("*.py")):
            if path.name == "__init__.py":
                continue
            dotted = ".".join((CLIENT_PACKAGE, "api") + path.relative_to(api_dir).with_suffix("").parts)
            modules[path.stem] = dotted
        found = {}
        for _, _, operation in self.operations():
            op_id = operation.get("operationId")
            if not op_id:
                continue
            stem = snake(op_id)
            if stem in modules:
                found[op_id] = importlib.import_module(modules[stem])
            else:
                self.fail("generate", f"no generated module for operation {op_id!r}")
        return found

    def call(self, modules, op_id, body=None, **params):
        """Calls a generated operation's sync_detailed(); a JSON body is turned
        into the generated body model first. Returns the generated Response."""
        module = modules[op_id]
        if body is not None:
            params["body"] = to_body(module.sync_detailed, body)
        return module.sync_detailed(client=self.client, **params)

    def use_client(self, package):
        modules = self.find_operations(package)
        self.client = package.AuthenticatedClient(base_url=self.base_url, token=self.token, timeout=30.0)
        needed = ("create_record", "get_record", "submit_background", "get_job")
        absent = [op for op in needed if op not in modules]
        if absent:
            self.fail("client", f"cannot use the client: no generated operation {', '.join(absent)}")
            return

        # Create a record: 201 with the stored record, which has an id.
        record_body = {"name": "Generated", "creditlimit": 5}
        response = self.call(modules, "create_record", table="account", body=record_body)
        record = self.parsed("create_record", response, 201)
        if record is not None:
            self.summary["record_id"] = field(record, "id")
            if not self.summary["record_id"]:
                self.fail("client", f"create_record: the parsed record has no id: {record!r}")
        else:
            # Not parsed (already reported): take the id from the raw body so
            # the following operations are still exercised and reported.
            self.summary["record_id"] = raw_field(response, "id")

        # Read it back.
        if self.summary.get("record_id"):
            response = self.call(modules, "get_record", table="account", id=self.summary["record_id"])
            record = self.parsed("get_record", response, 200)
            if record is not None:
                got = {key: field(record, key) for key in ("id", "name", "creditlimit")}
                expected = {"id": self.summary["record_id"], **record_body}
                if not (got["id"] == expected["id"] and got["name"] == expected["name"]
                        and numeric(got["creditlimit"]) == numeric(expected["creditlimit"])):
                    self.fail("client", f"get_record: read back {got}, expected {expected}")

        # Submit a background operation due in an hour: 202 {"id", "location"}.
        background = {"plugin": "notify", "input": {}, "at": "+1h"}
        response = self.call(modules, "submit_background", body=background)
        accepted = self.parsed("submit_background", response, 202)
        if accepted is not None:
            job_id = attribute(accepted, "id")
            location = attribute(accepted, "location")
            if not job_id or not isinstance(location, str) or not location.endswith(str(job_id)):
                self.fail("client", f"submit_background: expected model attributes id and location (the job's URL), got {accepted!r}")
            else:
                self.summary["job_id"] = job_id
        else:
            self.summary["job_id"] = raw_field(response, "id")

        # Read the job: its id and status through the generated model.
        if self.summary.get("job_id"):
            response = self.call(modules, "get_job", id=self.summary["job_id"])
            job = self.parsed("get_job", response, 200)
            if job is not None:
                job_id, status = attribute(job, "id"), attribute(job, "status")
                status = getattr(status, "value", status)  # a generated enum, or a str
                self.summary["job_status"] = status
                if job_id != self.summary["job_id"]:
                    self.fail("client", f"get_job: the model's id is {job_id!r}, expected {self.summary['job_id']!r}")
                if status not in WAITING_STATUSES:
                    self.fail("client", f"get_job: the model's status is {status!r}, expected one of {WAITING_STATUSES}")

        if not any(check == "client" for check, _ in self.failures):
            log(f"ok   [client] record {self.summary.get('record_id')}, job {self.summary.get('job_id')} ({self.summary.get('job_status')})")

    def parsed(self, op_id, response, expected_status):
        """The generated model of an answer; None (and a failure) if the status
        is not the expected one or the client could not parse the body."""
        if int(response.status_code) != expected_status:
            self.fail("client", f"{op_id}: answered {int(response.status_code)}, expected {expected_status}: {short(response.content.decode(errors='replace'))}")
            return None
        if response.parsed is None:
            self.fail("client", f"{op_id}: the generated client did not parse the {expected_status} answer into a model "
                                f"(the document has no schema for it, or the generator dropped it: see its warnings): {short(response.content.decode(errors='replace'))}")
            return None
        return response.parsed

    # ------------------------------------------------------------------
    # 4. Raw answers match the documented schemas
    # ------------------------------------------------------------------

    def ensure_ids(self):
        """A record and a job to read, made with plain HTTP where the generated
        client could not make them (so step 4 still runs and reports)."""
        if not self.summary.get("record_id"):
            response = self.http.post("/api/data/account", json={"name": "Raw", "creditlimit": 5})
            if response.status_code == 201:
                self.summary["record_id"] = response.json().get("id")
        if not self.summary.get("job_id"):
            response = self.http.post("/api/background", json={"plugin": "notify", "input": {}, "at": "+1h"})
            if response.status_code == 202:
                self.summary["job_id"] = response.json().get("id")

    def check_responses(self):
        self.ensure_ids()
        record_id, job_id = self.summary.get("record_id"), self.summary.get("job_id")
        # (method, path template, concrete path, expected status, JSON body)
        cases = [("get", template, path, expected, None) for template, path, expected in [
            ("/api/jobs", "/api/jobs", 200),
            ("/api/jobs/{id}", f"/api/jobs/{job_id}", 200),
            ("/api/steps", "/api/steps", 200),
            ("/api/plugins", "/api/plugins", 200),
            ("/api/tables", "/api/tables", 200),
            ("/api/users", "/api/users", 200),
            ("/api/traces", "/api/traces", 200),
            ("/api/stats", "/api/stats", 200),
            ("/api/health", "/api/health", 200),
            ("/api/data/{table}", "/api/data/account", 200),
            ("/api/data/{table}/{id}", f"/api/data/account/{record_id}", 200),
            ("/api/jobs/groups", "/api/jobs/groups?by=plugin", 200),
            ("/api/schedules", "/api/schedules", 200),
            ("/api/jobs/{id}", "/api/jobs/does-not-exist", 404),
            ("/api/jobs/groups", "/api/jobs/groups?by=nothing", 400),
        ]]
        # Writes too: what the bulk, job-action, table and step endpoints answer.
        cases += [
            ("post", "/api/jobs/bulk", "/api/jobs/bulk", 200, {"action": "pause", "filter": f"id eq '{job_id}'", "dry_run": True}),
            ("post", "/api/jobs/{id}/{action}", f"/api/jobs/{job_id}/pause", 200, {}),
            ("post", "/api/jobs/{id}/{action}", f"/api/jobs/{job_id}/postpone", 200, {"until": "+2h"}),
            ("post", "/api/jobs/{id}/{action}", f"/api/jobs/{job_id}/retry", 409, {}),
            ("post", "/api/tables", "/api/tables", 201, {"name": "checked", "columns": [{"name": "label", "type": "text"}]}),
            ("post", "/api/steps", "/api/steps", 201, {"name": "checked-nightly", "plugin": "notify", "schedule": "0 0 2 * * *"}),
            ("post", "/api/data/{table}/batch", "/api/data/checked/batch", 200, [{"label": "a"}, {"nope": 1}]),
        ]
        registry = referencing.Registry().with_resource(
            DOC_URI,
            referencing.Resource.from_contents(self.doc, default_specification=referencing.jsonschema.DRAFT202012),
        )
        mismatches = 0
        for method, template, path, expected, body in cases:
            label = f"{method.upper()} {path}"
            response = self.http.request(method.upper(), path, json=body) if body is not None else self.http.request(method.upper(), path)
            if response.status_code != expected:
                self.fail("responses", f"{label}: answered {response.status_code}, expected {expected}: {short(response.text)}")
                mismatches += 1
                continue
            try:
                instance = response.json()
            except ValueError:
                self.fail("responses", f"{label}: the {expected} answer is not JSON: {short(response.text)}")
                mismatches += 1
                continue
            if self.response_schema(template, method, expected) is None:
                self.fail("responses", f"{label}: no schema documented at paths['{template}'].{method}.responses['{expected}'].content['application/json']")
                mismatches += 1
                continue
            # Validate against a reference into the registered document, so the
            # schema's own `#/components/...` references resolve in it.
            pointer = "/".join(escape(p) for p in ("paths", template, method, "responses", str(expected), "content", "application/json", "schema"))
            validator = jsonschema.Draft202012Validator(
                {"$ref": f"{DOC_URI}#/{pointer}"},
                registry=registry,
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
            try:
                errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
            except Exception as error:  # e.g. a reference to nowhere
                self.fail("responses", f"{label}: the schema cannot be used: {type(error).__name__}: {short(str(error))}")
                mismatches += 1
                continue
            for error in errors[:20]:
                where = "".join(f"[{p!r}]" for p in error.absolute_path) or "(the body)"
                schema_at = "/".join(str(p) for p in error.absolute_schema_path)
                self.fail("responses", f"{label} ({expected}): at {where}: {short(error.message)} (schema: {schema_at})")
            if len(errors) > 20:
                self.fail("responses", f"{label} ({expected}): ... and {len(errors) - 20} more errors")
            mismatches += bool(errors)
        self.summary["response_mismatches"] = mismatches
        if not mismatches:
            log(f"ok   [responses] {len(cases)} answers match their documented schemas")

    # ------------------------------------------------------------------

    def step(self, check, function, *args):
        """Runs one check; an exception in it (a server down, generated code
        failing at run time) is that check's failure, not the script's crash."""
        try:
            return function(*args)
        except Exception as error:
            self.fail(check, f"{function.__name__} raised {type(error).__name__}: {short(str(error))}")
            return None

    def run(self):
        if self.step("spec", self.check_document):
            self.step("schemas", self.check_completeness)
            package = self.step("generate", self.generate_client)
            if package is not None:
                self.step("client", self.use_client, package)
            self.step("responses", self.check_responses)
        self.summary["failures"] = len(self.failures)
        self.summary["passed"] = not self.failures
        print(json.dumps(self.summary, default=str), flush=True)
        return 0 if not self.failures else 1


# ----------------------------------------------------------------------
# Small helpers over generated code and values
# ----------------------------------------------------------------------


def snake(name):
    """openapi-python-client's module name for an operationId (the handlers'
    names are snake_case already; this covers camelCase and dashes too)."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (name[i - 1].islower() or name[i - 1].isdigit()):
            out.append("_")
        out.append(ch.lower() if ch.isalnum() else "_")
    return "".join(out).strip("_")


def to_body(function, payload):
    """Turns a JSON payload into whatever `body` type the generated function
    declares: a generated model (has from_dict), or a plain dict/list."""
    hint = typing.get_type_hints(function).get("body")
    candidates = typing.get_args(hint) or (hint,)
    for candidate in candidates:
        if hasattr(candidate, "from_dict"):
            return candidate.from_dict(payload)
    return payload


def attribute(model, name):
    """A model attribute (a declared property), None if the model has none:
    a value only present among additional_properties does not count."""
    if not hasattr(type(model), "__attrs_attrs__"):  # not a generated model
        return None
    value = getattr(model, name, None)
    return None if type(value).__name__ == "Unset" else value  # types.Unset: absent


def field(model, name):
    """A value by name from a model's attributes or additional properties (a
    record is free-form: its columns may be additional properties)."""
    value = attribute(model, name)
    if value is None and hasattr(model, "additional_properties"):
        value = model.additional_properties.get(name)
    if value is None and isinstance(model, dict):
        value = model.get(name)
    return value


def raw_field(response, name):
    """A value from a generated Response's raw JSON body, None if none."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def numeric(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def escape(segment):
    """A JSON pointer segment, then made safe for a URI fragment."""
    return quote(segment.replace("~", "~0").replace("/", "~1"), safe="~")


def main(argv):
    if len(argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return Checker(*argv[1:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
