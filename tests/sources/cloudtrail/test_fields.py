"""Tests for sources/cloudtrail/fields.py and info.py: what each CloudTrail field reads from a record."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from agent.event import Event
from agent.fields import ArgKind, FieldFlag, FieldSpec, FieldType
from sources.cloudtrail.fields import cloudtrail_field_specs, cloudtrail_source

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
SOURCE = cloudtrail_source()
PREFIXES = ("ct.", "s3.", "ec2.", "ecr.", "iam.")


def reference(relative: str) -> Path:
    path = REFERENCE / relative
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


def field_spec(name: str) -> FieldSpec:
    spec = SOURCE.fields.get(name)
    assert spec is not None, name
    return spec


def extract(record: Any, field: str, arg: str | None = None) -> Any:
    return field_spec(field).bind(arg)(Event(source="aws_cloudtrail", ts_ns=0, payload=record))


def sample_records() -> list[tuple[str, dict[str, Any]]]:
    records = []
    for path in sorted(reference("samples/cloudtrail/stratus").glob("*.json")):
        records += [(f"{path.name}#{i}", rec) for i, rec in enumerate(json.loads(path.read_text()))]
    alice = reference("samples/cloudtrail/falco-regression/alice_start_instances.json")
    records += [(alice.name, rec) for rec in json.loads(alice.read_text())["Records"]]
    return records


def alice() -> dict[str, Any]:
    """A minimal IAM-user record, built fresh for each test so tests may edit it."""
    return {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAX", "arn": "arn:aws:iam::111:user/alice",
                         "accountId": "111", "userName": "alice"},
        "eventTime": "2024-05-01T10:00:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "ListBuckets",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2",
        "eventType": "AwsApiCall",
        "readOnly": True,
        "recipientAccountId": "222",
    }


class TestFieldTable:
    def test_every_reference_field_is_registered_with_its_type_and_argument(self) -> None:
        """All 73 fields of aws_cloudtrail.tsv exist with the reference type, list-ness and argument kind."""
        with reference("fields/aws_cloudtrail.tsv").open(newline="") as table:
            rows = list(csv.DictReader(table, delimiter="\t"))
        assert len(rows) == 73
        for row in rows:
            spec = SOURCE.fields.get(row["name"])
            assert spec is not None, row["name"]
            type_name = row["type"].removesuffix(" (list)")
            assert spec.type is FieldType.parse(type_name), row["name"]
            assert spec.is_list == row["type"].endswith("(list)"), row["name"]
            assert spec.arg is (ArgKind.INDEX if row["arg"] == "Index" else ArgKind.NONE), row["name"]
            assert spec.is_implemented, row["name"]
            assert (FieldFlag.DEPRECATED in spec.flags) == ("Deprecated" in row["description"]), row["name"]
            # Descriptions are our own words, on one line.
            assert spec.description and "\n" not in spec.description
            assert spec.description.lower() != row["description"].lower(), row["name"]
        assert len(cloudtrail_field_specs()) == 73

    def test_source_spec_stands_in_for_the_cloudtrail_and_json_plugins(self) -> None:
        """The source is named aws_cloudtrail, indexes on ct.name and also offers evt.* and json.* fields."""
        assert SOURCE.name == "aws_cloudtrail"
        assert SOURCE.index_fields == ("ct.name",)
        assert SOURCE.plugins == (("cloudtrail", "0.17.1"), ("json", "0.7.4"))
        for name in ("evt.num", "evt.plugininfo", "json.value", "jevt.value", "ct.info"):
            assert name in SOURCE.fields
        assert extract(alice(), "evt.pluginname") == "cloudtrail"
        assert extract(alice(), "json.value", "/userIdentity/userName") == "alice"

    def test_every_field_of_the_upstream_rules_resolves(self) -> None:
        """Each field aws_cloudtrail_rules.yaml uses exists in the source and has an extractor."""
        usage = json.loads(reference("fields/usage-by-upstream-rules.json").read_text())
        used = usage["aws_cloudtrail_rules.yaml"]["distinct"]
        assert used
        missing = [name for name in used if name not in SOURCE.fields]
        assert missing == []
        assert all(field_spec(name).is_implemented for name in used)

    def test_index_argument_is_validated_when_a_rule_is_compiled(self) -> None:
        """ec2.imageids[x] is refused and fields without arguments refuse one."""
        with pytest.raises(ValueError, match="numeric index"):
            field_spec("ec2.imageids").bind("x")
        with pytest.raises(ValueError, match="does not take an argument"):
            field_spec("ct.name").bind("0")


class TestPlainFields:
    @pytest.mark.parametrize(
        ("field", "expected"),
        [
            ("ct.name", "ListBuckets"),
            ("ct.src", "s3.amazonaws.com"),
            ("ct.shortsrc", "s3"),
            ("ct.region", "eu-west-1"),
            ("ct.srcip", "203.0.113.7"),
            ("ct.useragent", "aws-cli/2"),
            ("ct.time", "2024-05-01T10:00:00Z"),
            ("ct.eventtype", "AwsApiCall"),
            ("ct.user.arn", "arn:aws:iam::111:user/alice"),
            ("ct.user.principalid", "AIDAX"),
            ("ct.user.identitytype", "IAMUser"),
            ("ct.recipientaccountid", "222"),
        ],
    )
    def test_string_at_its_path(self, field: str, expected: str) -> None:
        """A plain field yields the string stored at its JSON path."""
        assert extract(alice(), field) == expected

    @pytest.mark.parametrize("field", ["ct.id", "ct.error", "ct.errormessage", "ct.vpcendpointid",
                                       "ct.addendum.reason", "ct.tlsdetails.tlsversion", "s3.bucket"])
    def test_absent_key_is_not_available(self, field: str) -> None:
        """A field whose key is absent is not available (prints <NA>, `exists` is false)."""
        assert extract(alice(), field) is None

    @pytest.mark.parametrize("value", [42, 1.5, True, None, {"a": 1}, ["x"]])
    def test_non_string_value_reads_as_empty_string(self, value: Any) -> None:
        """A number, boolean, null, object or array where a string is expected reads as ""."""
        record = alice() | {"errorCode": value, "serviceEventDetails": value}
        record["requestParameters"] = {"bucketName": value}
        assert extract(record, "ct.error") == ""
        assert extract(record, "ct.serviceeventdetails") == ""
        assert extract(record, "s3.bucket") == ""

    def test_path_through_a_non_object_is_not_available(self) -> None:
        """A nested field is not available when its parent is null or not an object."""
        record = alice() | {"requestParameters": None, "responseElements": "text", "tlsDetails": [1]}
        assert extract(record, "ct.request.name") is None
        assert extract(record, "ct.response.subnetid") is None
        assert extract(record, "ct.tlsdetails.ciphersuite") is None

    def test_request_and_response_fields(self) -> None:
        """Every ct.request.* / ct.response.* / ecr / iam field reads its own request or response key."""
        request = {"availabilityZone": "az1", "cluster": "c", "functionName": "f", "groupName": "g",
                   "Host": "h", "name": "n", "policy": "p", "reason": "r", "target": "t",
                   "serialNumber": "sn", "serviceName": "sv", "subnetId": "sub", "taskDefinition": "td",
                   "userName": "u", "repositoryName": "repo", "imageTag": "latest", "roleName": "role",
                   "policyName": "pol", "key": "k"}
        record = alice() | {"requestParameters": request,
                            "responseElements": {"subnetId": "rs", "reservationId": "r-1"}}
        expected = {
            "ct.request.availabilityzone": "az1", "ct.request.cluster": "c", "ct.request.functionname": "f",
            "ct.request.groupname": "g", "ct.request.host": "h", "ct.request.name": "n",
            "ct.request.policy": "p", "ct.request.reason": "r", "ct.request.target": "t",
            "ct.request.serialnumber": "sn", "ct.request.servicename": "sv", "ct.request.subnetid": "sub",
            "ct.request.taskdefinition": "td", "ct.request.username": "u", "ecr.repository": "repo",
            "ecr.imagetag": "latest", "iam.role": "role", "iam.policy": "pol", "s3.key": "k",
            "ct.response.subnetid": "rs", "ct.response.reservationid": "r-1",
        }
        assert {field: extract(record, field) for field in expected} == expected

    def test_top_level_and_nested_metadata_fields(self) -> None:
        """Request metadata, addendum and TLS details come from their documented keys."""
        record = alice() | {
            "requestID": "rq", "apiVersion": "2015", "sharedEventID": "sh", "vpcEndpointId": "vpce-1",
            "eventCategory": "Data", "eventID": "ev", "errorMessage": "denied",
            "addendum": {"reason": "DELIVERY_DELAY", "updatedFields": "f", "originalRequestID": "orq",
                         "originalEventID": "oev"},
            "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "AES", "clientProvidedHostHeader": "host"},
        }
        expected = {
            "ct.requestid": "rq", "ct.apiversion": "2015", "ct.sharedeventid": "sh",
            "ct.vpcendpointid": "vpce-1", "ct.eventcategory": "Data", "ct.id": "ev",
            "ct.errormessage": "denied", "ct.addendum.reason": "DELIVERY_DELAY",
            "ct.addendum.updatedfields": "f", "ct.addendum.originalrequestid": "orq",
            "ct.addendum.originaleventid": "oev", "ct.tlsdetails.tlsversion": "TLSv1.3",
            "ct.tlsdetails.ciphersuite": "AES", "ct.tlsdetails.clientprovidedhostheader": "host",
        }
        assert {field: extract(record, field) for field in expected} == expected

    @pytest.mark.parametrize(
        ("source", "expected"),
        [("iam.amazonaws.com", "iam"), ("custom.example.com", "custom.example.com"),
         (".amazonaws.com", ".amazonaws.com"), (7, "")],
    )
    def test_shortsrc_drops_only_the_aws_suffix(self, source: Any, expected: str) -> None:
        """ct.shortsrc strips a trailing .amazonaws.com but never empties the name."""
        assert extract(alice() | {"eventSource": source}, "ct.shortsrc") == expected

    def test_account_id_falls_back_to_recipient_account(self) -> None:
        """ct.user.accountid is the caller's account, else the account that received the event."""
        record = alice()
        assert extract(record, "ct.user.accountid") == "111"
        del record["userIdentity"]["accountId"]
        assert extract(record, "ct.user.accountid") == "222"
        del record["recipientAccountId"]
        assert extract(record, "ct.user.accountid") is None

    def test_documentname_is_never_available(self) -> None:
        """ct.request.documentname is never available, whatever the request holds (upstream quirk)."""
        record = alice() | {"requestParameters": {"documentName": "AWS-RunShellScript",
                                                  "DocumentName": "AWS-RunShellScript"}}
        assert extract(record, "ct.request.documentname") is None

    @pytest.mark.parametrize(
        ("field", "key"),
        [("ct.readonly", "readOnly"), ("ct.managementevent", "managementEvent"),
         ("ct.sessioncredentialfromconsole", "sessionCredentialFromConsole")],
    )
    def test_flags_read_as_true_false_text(self, field: str, key: str) -> None:
        """Flag fields are "true" only for JSON true, "false" for any other value, absent when missing."""
        record = alice()
        record.pop(key, None)
        assert extract(record, field) is None
        assert extract(record | {key: True}, field) == "true"
        assert extract(record | {key: False}, field) == "false"
        assert extract(record | {key: "true"}, field) == "false"


class TestUser:
    @pytest.mark.parametrize(
        ("identity", "expected"),
        [
            ({"type": "Root", "userName": "root-name"}, "root-name"),
            ({"type": "IAMUser", "userName": "bob"}, "bob"),
            ({"type": "IAMUser"}, None),
            ({"type": "IAMUser", "userName": 5}, ""),
            ({"type": "AWSService", "invokedBy": "lambda.amazonaws.com"}, "lambda.amazonaws.com"),
            ({"type": "AWSService"}, None),
            ({"type": "AssumedRole", "userName": "ignored",
              "sessionContext": {"sessionIssuer": {"userName": "deploy-role"}}}, "deploy-role"),
            ({"type": "AssumedRole", "sessionContext": {"attributes": {}}}, "AssumedRole"),
            ({"type": "AssumedRole"}, "AssumedRole"),
            ({"type": "AWSAccount", "accountId": "333"}, "AWSAccount"),
            ({"type": "FederatedUser", "userName": "x"}, "FederatedUser"),
            ({"type": "IdentityCenterUser", "userName": "x"}, None),
            ({"userName": "x"}, None),
            ({"type": ["IAMUser"], "userName": "x"}, None),
        ],
    )
    def test_user_depends_on_identity_type(self, identity: dict[str, Any], expected: str | None) -> None:
        """ct.user picks the user name, invoking service or role name according to userIdentity.type."""
        assert extract(alice() | {"userIdentity": identity}, "ct.user") == expected

    def test_user_without_identity_is_not_available(self) -> None:
        """A record without userIdentity has no ct.user."""
        record = alice()
        del record["userIdentity"]
        assert extract(record, "ct.user") is None

    @pytest.mark.parametrize(
        ("identity", "expected"),
        [
            ({"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/admin/jane@example.com",
              "principalId": "AROA1:other"}, "jane@example.com"),
            ({"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/path/admin/jane",
              "principalId": "AROA1:jane-session"}, "jane-session"),
            ({"type": "AssumedRole", "principalId": "AROA1:jane-session"}, "jane-session"),
            ({"type": "AssumedRole", "arn": "odd", "principalId": "a:b:c"}, None),
            ({"type": "AssumedRole", "userName": "not-used"}, None),
            ({"type": "IAMUser", "userName": "bob", "arn": "arn:aws:iam::1:user/a/b"}, "bob"),
            ({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}, None),
            ({"userName": "typeless"}, "typeless"),
        ],
    )
    def test_original_user_is_the_session_name_of_assumed_roles(
        self, identity: dict[str, Any], expected: str | None
    ) -> None:
        """ct.originaluser is the role session name (from the ARN, else the principal ID) or userName."""
        assert extract(alice() | {"userIdentity": identity}, "ct.originaluser") == expected


class TestJsonTextFields:
    def test_request_response_and_additional_data_as_compact_json(self) -> None:
        """ct.request, ct.response and ct.additionaleventdata serialise the whole sub-document."""
        record = alice() | {"requestParameters": {"bucketName": "b", "n": [1, 2.5, None, True]},
                            "responseElements": None, "additionalEventData": {"MFAUsed": "Yes"}}
        assert extract(record, "ct.request") == '{"bucketName":"b","n":[1,2.5,null,true]}'
        assert extract(record, "ct.response") == "null"
        assert extract(record, "ct.additionaleventdata") == '{"MFAUsed":"Yes"}'
        del record["responseElements"]
        assert extract(record, "ct.response") is None

    def test_sub_documents_orjson_refuses_to_write(self) -> None:
        """A sub-document nested 1,000 deep (orjson writes 254 levels; the standard library's writer recursed past
        its limit) and integers past 64 bits come out as compact JSON too."""
        deep: Any = {"n": 2**70}
        for _ in range(1000):
            deep = [deep]
        record = alice() | {"requestParameters": deep, "responseElements": {"n": -(2**70), "s": "é"}}
        assert extract(record, "ct.request") == "[" * 1000 + '{"n":1180591620717411303424}' + "]" * 1000
        assert extract(record, "ct.response") == '{"n":-1180591620717411303424,"s":"é"}'

    def test_resources_joined_with_commas(self) -> None:
        """ct.resources is each resource as JSON text, comma-separated; empty or non-list is absent."""
        resources = [{"ARN": "arn:1", "type": "AWS::IAM::Role"}, {"ARN": "arn:2"}]
        assert extract(alice() | {"resources": resources}, "ct.resources") == (
            '{"ARN":"arn:1","type":"AWS::IAM::Role"},{"ARN":"arn:2"}'
        )
        assert extract(alice() | {"resources": []}, "ct.resources") is None
        assert extract(alice() | {"resources": {"ARN": "x"}}, "ct.resources") is None
        assert extract(alice(), "ct.resources") is None


class TestInfo:
    def test_read_call_summary(self) -> None:
        """ct.info shows user, source address, a read arrow and the event name."""
        assert extract(alice(), "ct.info") == "alice via 203.0.113.7 \u2190 ListBuckets"

    def test_failed_write_is_marked(self) -> None:
        """A failed state-changing call gets "!" and the write arrow."""
        record = alice() | {"readOnly": False, "errorCode": "AccessDenied", "eventName": "DeleteBucket"}
        assert extract(record, "ct.info") == "alice via 203.0.113.7 !\u2192 DeleteBucket"

    def test_missing_read_only_counts_as_read(self) -> None:
        """Without readOnly the arrow points left, as upstream does."""
        record = alice()
        del record["readOnly"]
        assert extract(record, "ct.info").endswith("\u2190 ListBuckets")

    def test_service_calling_from_its_own_name_is_not_repeated(self) -> None:
        """When ct.user equals the source address (a service), "via <srcip>" is left out."""
        record = alice() | {"userIdentity": {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
                            "sourceIPAddress": "ec2.amazonaws.com"}
        assert extract(record, "ct.info") == "ec2.amazonaws.com \u2190 ListBuckets"

    def test_s3_size_and_uri(self) -> None:
        """An S3 object call adds its transfer size and object URI."""
        record = alice() | {"eventName": "GetObject",
                            "requestParameters": {"bucketName": "logs", "key": "a/b.txt", "Host": "h"},
                            "additionalEventData": {"bytesTransferredIn": 0, "bytesTransferredOut": 512.9}}
        assert extract(record, "ct.info") == "alice via 203.0.113.7 \u2190 GetObject Size=512 URI=s3://logs/a/b.txt"

    @pytest.mark.parametrize(
        ("params", "suffix"),
        [({"bucketName": "logs"}, " Bucket=logs"), ({"key": "k"}, " Key=k"),
         ({"Host": "h.example"}, " Host=h.example"), ({"bucketName": "b", "key": 3}, " Bucket=b"), ({}, "")],
    )
    def test_first_available_target_detail(self, params: dict[str, Any], suffix: str) -> None:
        """Without a full S3 URI, ct.info adds the bucket, else the key, else the request host."""
        record = alice() | {"requestParameters": params}
        assert extract(record, "ct.info") == "alice via 203.0.113.7 \u2190 ListBuckets" + suffix

    def test_public_access_block_flags_are_read_from_the_record_top_level(self) -> None:
        """PutBucketPublicAccessBlock lists four flags, read from the record root as upstream does."""
        config = {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                  "RestrictPublicBuckets": True}
        record = alice() | {"eventName": "PutBucketPublicAccessBlock", "readOnly": False,
                            "requestParameters": {"bucketName": "b",
                                                  "PublicAccessBlockConfiguration": config}}
        assert extract(record, "ct.info") == (
            "alice via 203.0.113.7 \u2192 PutBucketPublicAccessBlock BlockPublicAcls=false "
            "BlockPublicPolicy=false IgnorePublicAcls=false RestrictPublicBuckets=false "
        )
        record["IgnorePublicAcls"] = True
        assert "IgnorePublicAcls=true" in extract(record, "ct.info")
        record["requestParameters"] = {"bucketName": "b"}
        assert extract(record, "ct.info") == "alice via 203.0.113.7 \u2192 PutBucketPublicAccessBlock"

    @pytest.mark.parametrize(
        ("missing", "message"),
        [("userIdentity", "<invalid cloudtrail event: userIdentity field missing>"),
         ("sourceIPAddress", "<invalid cloudtrail event: eventSource field missing>"),
         ("eventName", "<invalid cloudtrail event: eventName field missing>")],
    )
    def test_incomplete_record_still_has_a_summary(self, missing: str, message: str) -> None:
        """ct.info is always available; a record without who, where or what says so."""
        record = alice()
        del record[missing]
        assert extract(record, "ct.info") == message

    def test_plugininfo_is_the_summary(self) -> None:
        """%evt.plugininfo prints the same text as ct.info."""
        assert extract(alice(), "evt.plugininfo") == extract(alice(), "ct.info")


class TestS3:
    def test_bytes_add_in_and_out_truncating_fractions(self) -> None:
        """s3.bytes is uploaded plus downloaded bytes as an integer, with fractions dropped."""
        record = alice() | {"additionalEventData": {"bytesTransferredIn": 10.9, "bytesTransferredOut": 33}}
        assert extract(record, "s3.bytes") == 43
        assert extract(record, "s3.bytes.in") == 10
        assert extract(record, "s3.bytes.out") == 33

    def test_bytes_present_when_either_counter_is(self) -> None:
        """One counter is enough for s3.bytes; the other direction is then not available."""
        record = alice() | {"additionalEventData": {"bytesTransferredOut": 7}}
        assert extract(record, "s3.bytes") == 7
        assert extract(record, "s3.bytes.in") is None
        assert extract(alice(), "s3.bytes") is None
        assert extract(alice() | {"additionalEventData": {"x": 1}}, "s3.bytes") is None

    @pytest.mark.parametrize("value", ["12", None, True, {"n": 1}, -5])
    def test_non_numeric_counter_counts_as_zero(self, value: Any) -> None:
        """A counter that is not a non-negative number still makes the field available, as 0."""
        record = alice() | {"additionalEventData": {"bytesTransferredIn": value, "bytesTransferredOut": 4}}
        assert extract(record, "s3.bytes.in") == 0
        assert extract(record, "s3.bytes") == 4

    def test_uri_needs_bucket_and_key_strings(self) -> None:
        """s3.uri is s3://bucket/key, not available unless both are strings."""
        record = alice() | {"requestParameters": {"bucketName": "b", "key": "dir/f"}}
        assert extract(record, "s3.uri") == "s3://b/dir/f"
        assert extract(alice() | {"requestParameters": {"bucketName": "b"}}, "s3.uri") is None
        assert extract(alice() | {"requestParameters": {"bucketName": "b", "key": 1}}, "s3.uri") is None

    @pytest.mark.parametrize(
        ("name", "get", "put", "other"),
        [("GetObject", 1, None, None), ("PutObject", None, 1, None), ("ListBuckets", None, None, 1)],
    )
    def test_operation_counters(self, name: str, get: int | None, put: int | None, other: int | None) -> None:
        """s3.cnt.get / put / other are 1 for their kind of call and not available otherwise."""
        record = alice() | {"eventName": name}
        counters = tuple(extract(record, field) for field in ("s3.cnt.get", "s3.cnt.put", "s3.cnt.other"))
        assert counters == (get, put, other)


class TestEc2:
    def test_instance_name_from_instance_tags(self) -> None:
        """ec2.name is the Name tag of the instance tag specification; the last instance item wins."""
        items = [
            {"resourceType": "volume", "tags": [{"key": "Name", "value": "vol"}]},
            {"resourceType": "instance",
             "tags": [{"key": "env", "value": "prod"}, {"key": "Name", "value": "web"}]},
            {"resourceType": "instance", "tags": [{"key": "Name", "value": "web-2"}]},
        ]
        record = alice() | {"requestParameters": {"tagSpecificationSet": {"items": items}}}
        assert extract(record, "ec2.name") == "web-2"
        record["requestParameters"]["tagSpecificationSet"]["items"] = items[:1]
        assert extract(record, "ec2.name") is None

    def test_image_ids_from_response_instances(self) -> None:
        """ec2.imageids lists each responded instance's image; [N] selects one, past the end is absent."""
        items = [{"imageId": "ami-1"}, {"instanceId": "i-2"}, {"imageId": "ami-3"}]
        response = {"instancesSet": {"items": items}}
        record = alice() | {"responseElements": response, "requestParameters": {"imageId": "ami-request"}}
        assert extract(record, "ec2.imageids") == ("ami-1", "ami-3")
        assert extract(record, "ec2.imageids", "1") == "ami-3"
        assert extract(record, "ec2.imageids", "2") is None
        assert extract(record, "ec2.imageid") == "ami-1"

    def test_response_without_image_ids_is_not_available(self) -> None:
        """Instances without imageId make the list empty, i.e. not available, with no request fallback."""
        record = alice() | {"responseElements": {"instancesSet": {"items": [{"instanceId": "i-1"}]}},
                            "requestParameters": {"imageId": "ami-request"}}
        assert extract(record, "ec2.imageids") is None
        assert extract(record, "ec2.imageids", "0") is None
        assert extract(record, "ec2.imageid") is None

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"imageId": "ami-a", "launchSpecification": {"imageId": "ami-c"}}, "ami-a"),
            ({"DescribeFastLaunchImagesRequest": {"ImageId": {"content": "ami-b", "tag": 1}},
              "launchSpecification": {"imageId": "ami-c"}}, "ami-b"),
            ({"launchSpecification": {"imageId": "ami-c"}}, "ami-c"),
        ],
    )
    def test_image_id_fallbacks_in_the_request(self, params: dict[str, Any], expected: str) -> None:
        """Without instancesSet in the response, the request's image ID is used, in documented order."""
        record = alice() | {"responseElements": None, "requestParameters": params}
        assert extract(record, "ec2.imageids") == (expected,)
        assert extract(record, "ec2.imageids", "0") == expected
        assert extract(record, "ec2.imageid") == expected

    def test_no_image_anywhere_is_not_available(self) -> None:
        """A record naming no image has neither ec2.imageids nor ec2.imageid."""
        assert extract(alice(), "ec2.imageids") is None
        assert extract(alice(), "ec2.imageid") is None

    def test_imageid_is_deprecated(self) -> None:
        """ec2.imageid is flagged deprecated in favour of ec2.imageids[0]."""
        assert FieldFlag.DEPRECATED in field_spec("ec2.imageid").flags


class TestRealSamples:
    def test_alice_start_instances(self) -> None:
        """The Falco regression record reads as Falco shows it: IAM user Alice starting an instance."""
        path = reference("samples/cloudtrail/falco-regression/alice_start_instances.json")
        record = json.loads(path.read_text())["Records"][0]
        assert extract(record, "ct.name") == "StartInstances"
        assert extract(record, "ct.user") == "Alice"
        assert extract(record, "ct.id") is None
        assert extract(record, "ct.shortsrc") == "ec2"
        assert extract(record, "ct.info") == "Alice via 205.251.233.176 \u2190 StartInstances"
        assert extract(record, "ct.request") == '{"instancesSet":{"items":[{"instanceId":"i-ebeaf9e2"}]}}'
        assert extract(record, "ec2.imageids") is None

    def test_stratus_assumed_role_records(self) -> None:
        """For real assumed-role records, ct.user is the role and ct.originaluser the session name."""
        path = reference("samples/cloudtrail/stratus/aws.execution.ec2-launch-unusual-instances.json")
        run = next(rec for rec in json.loads(path.read_text()) if rec["eventName"] == "RunInstances")
        assert extract(run, "ct.user") == "stratus-red-team-ec2lui-role-idtzskbvtd"
        assert extract(run, "ct.originaluser") == "aws-go-sdk-1722511821294449000"
        assert extract(run, "ct.error") == "Client.UnauthorizedOperation"
        assert extract(run, "ct.response") == "null"
        assert extract(run, "ct.request.subnetid") == "subnet-0e540f0c7ffb48ae9"
        assert extract(run, "ct.info") == (
            "stratus-red-team-ec2lui-role-idtzskbvtd via 06.237.252.245 !\u2192 RunInstances"
        )

    def test_stratus_iam_user_records(self) -> None:
        """A real CreateUser record exposes the new user name and the acting IAM user."""
        path = reference("samples/cloudtrail/stratus/aws.persistence.iam-create-admin-user.json")
        create = next(rec for rec in json.loads(path.read_text()) if rec["eventName"] == "CreateUser")
        assert extract(create, "ct.user") == extract(create, "ct.originaluser") == "christophe"
        assert extract(create, "ct.request.username") == create["requestParameters"]["userName"]
        assert extract(create, "ct.readonly") == "false"
        assert extract(create, "ct.tlsdetails.tlsversion") == "TLSv1.3"

    def test_every_field_obeys_the_value_rules_on_every_sample(self) -> None:
        """On all 143 real records every field yields None, its declared scalar type, or a non-empty tuple."""
        specs = [spec for spec in SOURCE.fields if spec.name.startswith(PREFIXES)]
        records = sample_records()
        assert len(records) == 143
        for where, record in records:
            event = Event(source="aws_cloudtrail", ts_ns=0, payload=record)
            for spec in specs:
                value = spec.bind(None)(event)
                if value is None:
                    continue
                if spec.is_list:
                    assert isinstance(value, tuple) and value, (where, spec.name)
                    assert all(isinstance(item, str) for item in value), (where, spec.name)
                elif spec.type is FieldType.UINT64:
                    assert type(value) is int and 0 <= value < 1 << 64, (where, spec.name)
                else:
                    assert isinstance(value, str), (where, spec.name)
            assert extract(record, "ct.name") == record["eventName"]
            assert extract(record, "ct.info").startswith(extract(record, "ct.user"))
