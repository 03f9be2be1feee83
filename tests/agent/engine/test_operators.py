"""Evaluation of every operator, modifier, transformer and right-hand field, including missing values."""

from __future__ import annotations

import base64
from typing import Any

import pytest


class TestMissingValues:
    @pytest.mark.parametrize("condition", [
        "t.name = a", "t.name != a", "t.name exists", "t.name contains a", "t.name in (a, b)",
        "t.name startswith a", "t.name glob *", "t.name regex .*", "t.num > 0", "t.num != 3", "t.tags in (a)",
        "t.tags intersects (a)", "t.tags exists", "t.name pmatch (/)", "t.name = val(t.other)",
        "t.name != anyof (a, b)", "tolower(t.name) = a", "len(t.tags) = 0",
    ])
    def test_every_check_on_a_missing_field_is_false(self, lab, condition: str) -> None:
        """A field without a value fails every check, `!=` and `exists` included."""
        assert not lab.matches(condition, other="a")

    @pytest.mark.parametrize("condition", ["not t.name = a", "not t.name exists", "not t.num > 0"])
    def test_negated_check_on_missing_field_is_true(self, lab, condition: str) -> None:
        """`not <check>` on a missing field is true."""
        assert lab.matches(condition)

    def test_missing_right_hand_field_is_false(self, lab) -> None:
        """`val(f)` without a value makes the check false."""
        assert not lab.matches("t.name != val(t.other)", name="a")

    def test_empty_list_field_is_missing(self, lab) -> None:
        """An empty list is "not available": `exists` is false."""
        assert not lab.matches("t.tags exists", tags=[])


class TestEquality:
    @pytest.mark.parametrize(("condition", "payload", "expected"), [
        ("t.name = abc", {"name": "abc"}, True),
        ("t.name == abc", {"name": "abc"}, True),
        ("t.name = abc", {"name": "ABC"}, False),
        ("t.name != abc", {"name": "ABC"}, True),
        ("t.name != abc", {"name": "abc"}, False),
        ("t.num = 10", {"num": 10}, True),
        ("t.num = 0xa", {"num": 10}, True),
        ("t.num != 10", {"num": 11}, True),
        ("t.size = -3", {"size": -3}, True),
        ("t.flag = true", {"flag": True}, True),
        ("t.flag = false", {"flag": True}, False),
        ("t.flag != false", {"flag": True}, True),
        ('t.name = "a b"', {"name": "a b"}, True),
        ("t.ip = 10.1.2.3", {"ip": "10.1.2.3"}, True),
        ("t.ip = 10.0.0.0/8", {"ip": "10.1.2.3"}, True),
        ("t.ip != 10.0.0.0/8", {"ip": "192.168.0.1"}, True),
        ("t.ip = ::1", {"ip": "::1"}, True),
        ("t.buf = abc", {"buf": b"abc"}, True),
    ])
    def test_equality(self, lab, condition: str, payload: dict[str, Any], expected: bool) -> None:
        """`=`/`==`/`!=` compare after converting the constant to the field's type."""
        assert lab.matches(condition, **payload) is expected


class TestOrdering:
    @pytest.mark.parametrize(("condition", "payload", "expected"), [
        ("t.num > 400", {"num": 1000}, True),
        ("t.num < 400", {"num": 1000}, False),
        ("t.num >= 1000", {"num": 1000}, True),
        ("t.num <= 999", {"num": 1000}, False),
        ("t.size < -1", {"size": -5}, True),
        ("t.num > 1.5", {"num": 2}, True),
        ("t.name < 400", {"name": "1000"}, True),
        ("t.name > 400", {"name": "1000"}, False),
        ("t.name >= 10", {"name": "9"}, True),
        ("t.name <= 10", {"name": "10"}, True),
    ])
    def test_numeric_on_numbers_lexicographic_on_strings(self, lab, condition: str, payload: dict[str, Any],
                                                          expected: bool) -> None:
        """Numeric fields compare as numbers; string fields compare byte-wise (`"1000" < "400"`)."""
        assert lab.matches(condition, **payload) is expected


class TestStringOperators:
    @pytest.mark.parametrize(("condition", "name", "expected"), [
        ("t.name contains ell", "hello", True),
        ("t.name contains ELL", "hello", False),
        ("t.name icontains ELL", "hello", True),
        ("t.name startswith he", "hello", True),
        ("t.name startswith lo", "hello", False),
        ("t.name endswith lo", "hello", True),
        ("t.name endswith he", "hello", False),
        ("t.name glob h*o", "hello", True),
        ("t.name glob h?llo", "hello", True),
        ("t.name glob h[a-f]llo", "hello", True),
        ("t.name glob h[!e]llo", "hello", False),
        ("t.name glob H*", "hello", False),
        ("t.name iglob H*O", "hello", True),
        ("t.name glob /usr/*", "/usr/lib/x", True),
        (r"t.name glob a\*", "a*", True),
        (r"t.name glob a\*", "ab", False),
        ("t.name glob ell", "hello", False),
        ("t.name regex h.l+o", "hello", True),
        ("t.name regex ell", "hello", False),
        ("t.name regex [a-z]+", "hello", True),
        ('t.name regex "^h.*"', "hello", True),
        ("t.name regex [[:alpha:]]+", "hello", True),
        ("t.name glob /etc/*", "/etc/ssh/sshd_config", True),
        ("t.name glob *", ".profile", True),
        ("t.name glob [!a-c]*", "/x", True),
        ("t.name glob caf?", "café", False),
        ("t.name glob caf??", "café", True),
        ("t.name glob [ab", "[ab", True),
        ("t.name iglob É*", "élan", False),
    ])
    def test_string_operators(self, lab, condition: str, name: str, expected: bool) -> None:
        """contains, icontains, startswith, endswith, glob/iglob as fnmatch(3) over bytes (`*` crosses `/` and
        leading dots, `?` is one byte, an unterminated `[` is literal, only ASCII folds) and (anchored) RE2 regex."""
        assert lab.matches(condition, name=name) is expected

    def test_bad_regex_is_a_compile_error(self, lab) -> None:
        """An invalid regular expression fails the load with the rule's line, the pattern and RE2's reason."""
        error = lab.error(lab.rule("t.name regex \"a(b\""))
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION" and error.location.line == 4
        assert "invalid regex pattern 'a(b': missing ): a(b" in error.message and "at 1:2" in error.message

    @pytest.mark.parametrize("pattern", [r"\\d+", r"(a)\\1", "(?:ab)+", "(?i)hello"])
    def test_perl_only_regex_syntax_is_a_compile_error(self, lab, pattern: str) -> None:
        """Falco's RE2 takes POSIX syntax: Perl classes, backreferences, `(?:` and flags fail the load."""
        error = lab.error(lab.rule(f't.name regex "{pattern}"'))
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION" and "invalid regex pattern" in error.message

    def test_regex_reads_undecodable_bytes_as_replacement_characters(self, lab) -> None:
        """A value with bytes that are not UTF-8 is matched, not an error: each such byte is one character."""
        assert lab.matches('t.name regex "a.b"', name="a\udcffb")

    def test_glob_against_another_field(self, lab) -> None:
        """`glob val(f)` takes the other field's value as the pattern, per event."""
        assert lab.matches("t.name glob val(t.other)", name="/srv/app/x", other="/srv/*/x")
        assert not lab.matches("t.name glob val(t.other)", name="/srv/app/x", other="/srv/*/y")


class TestBytes:
    @pytest.mark.parametrize(("condition", "expected"), [
        ("t.buf bcontains cafe", True),
        ("t.buf bcontains CAFE01", True),
        ("t.buf bcontains 0102", False),
        ("t.buf bstartswith 00ca", True),
        ("t.buf bstartswith cafe", False),
        ("t.buf contains x", False),
        ("t.buf endswith 01", False),
    ])
    def test_byte_operators_take_hex(self, lab, condition: str, expected: bool) -> None:
        """`bcontains`/`bstartswith` decode the value as hex bytes."""
        assert lab.matches(condition, buf=b"\x00\xca\xfe\x01") is expected

    def test_plain_operators_on_bytes_use_text(self, lab) -> None:
        """`contains` on a byte buffer looks for the value's bytes."""
        assert lab.matches("t.buf contains hi", buf=b"oh hi there")

    @pytest.mark.parametrize("value", ["zz", "abc"])
    def test_non_hex_is_a_compile_error(self, lab, value: str) -> None:
        """A value that is not hex fails compilation."""
        error = lab.error(lab.rule(f"t.buf bcontains {value}"))
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION" and error.location.line == 4
        assert "hex" in error.message


class TestListOperators:
    @pytest.mark.parametrize(("condition", "payload", "expected"), [
        ("t.name in (a, b)", {"name": "b"}, True),
        ("t.name in (a, b)", {"name": "c"}, False),
        ("t.name intersects (a, b)", {"name": "a"}, True),
        ("t.num in (1, 2, 0x10)", {"num": 16}, True),
        ("t.tags in (a, b, c)", {"tags": ["a", "c"]}, True),
        ("t.tags in (a, b)", {"tags": ["a", "c"]}, False),
        ("t.tags intersects (c, d)", {"tags": ["a", "c"]}, True),
        ("t.tags intersects (x, y)", {"tags": ["a", "c"]}, False),
        ("t.args[1] in (b)", {"args": ["a", "b"]}, True),
        ("t.args[0] = a", {"args": ["a", "b"]}, True),
        ("t.args[5] exists", {"args": ["a", "b"]}, False),
        ("t.ip in (10.0.0.0/8, 192.168.1.1)", {"ip": "10.9.8.7"}, True),
        ("t.ip in (10.0.0.0/8, 192.168.1.1)", {"ip": "192.168.1.1"}, True),
        ("t.ip in (10.0.0.0/8, 192.168.1.1)", {"ip": "11.0.0.1"}, False),
        ("t.name in ()", {"name": "a"}, False),
    ])
    def test_in_and_intersects(self, lab, condition: str, payload: dict[str, Any], expected: bool) -> None:
        """`in` on a list field needs every value in the set; `intersects` needs one."""
        assert lab.matches(condition, **payload) is expected

    @pytest.mark.parametrize(("path", "expected"), [
        ("/srv/app", True), ("/srv/app/x/y", True), ("/srv/application", False), ("//srv//app/", True),
        ("/etc/passwd", True), ("/etc/passwd2", False), ("/var/log/a/b", True), ("/var/tmp/a", False),
        ("/srv", False), ("/opt/a/b/c", True), ("/opt/a/b", False), ("/opt/ab/x/c", False),
    ])
    def test_pmatch(self, lab, path: str, expected: bool) -> None:
        """`pmatch` matches whole path components; entry components with wildcards are globbed."""
        assert lab.matches("t.path pmatch (/srv/app, /etc/passwd, /var/l*, /opt/?/*/c)", path=path) is expected

    def test_pmatch_root_entry_matches_every_path(self, lab) -> None:
        assert lab.matches("t.path pmatch (/)", path="/any/where")


class TestModifiers:
    @pytest.mark.parametrize(("condition", "expected"), [
        ("t.name startswith anyof (x, he)", True),
        ("t.name startswith anyof (x, y)", False),
        ("t.name contains allof (he, lo)", True),
        ("t.name contains allof (he, zz)", False),
        ("t.name contains oneof (he, lo)", False),
        ("t.name contains oneof (he, zz)", True),
        ("t.name != allof (a, b)", True),
        ("t.name != allof (a, hello)", False),
        ("t.name = anyof ()", False),
        ("t.name glob anyof (*z, h*)", True),
        ("t.name regex anyof (x+, h.*)", True),
        ("t.name iglob oneof (H*, *Z)", True),
        ("t.name endswith anyof (llo)", True),
        ("t.name icontains allof (HE, LL)", True),
    ])
    def test_modifiers(self, lab, condition: str, expected: bool) -> None:
        """`anyof` needs one constant to satisfy the operator, `allof` all, `oneof` exactly one."""
        assert lab.matches(condition, name="hello") is expected

    def test_modifier_on_ip_with_equality(self, lab) -> None:
        """IP fields accept `= anyof` with networks."""
        assert lab.matches("t.ip = anyof (10.0.0.0/8, 1.1.1.1)", ip="10.0.0.5")

    def test_bytes_modifier(self, lab) -> None:
        """`bcontains anyof` decodes each value as hex."""
        assert lab.matches("t.buf bcontains anyof (ff, fe01)", buf=b"\xca\xfe\x01")

    @pytest.mark.parametrize(("condition", "message"), [
        ("t.tags = anyof (a)", "list-valued"),
        ("t.ip startswith anyof (1)", "not supported"),
        ("t.ip = anyof (x)", "not a valid IP"),
    ])
    def test_modifier_errors(self, lab, condition: str, message: str) -> None:
        """Modifiers need a single-valued field and a fitting operator."""
        error = lab.error(lab.rule(condition))
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION" and error.location.line == 4
        assert message in error.message


class TestOperatorTypes:
    @pytest.mark.parametrize("condition", [
        "t.num contains 1", "t.num glob 1", "t.num pmatch (1)", "t.flag > 1", "t.flag contains t",
        "t.name bcontains 00", "t.buf icontains a", "t.buf glob a", "t.ip contains 1", "t.ip > 1",
        "t.tags = a", "t.tags contains a", "t.tags pmatch (a)", "t.num = abc", "t.flag = yes",
        "t.ip = not-an-ip", "t.name = val(t.norhs)", "t.name pmatch val(t.other)", "t.name regex val(t.other)",
        "t.print = x", "t.name in (a, val(t.other))",
    ])
    def test_invalid_combinations_fail_compilation(self, lab, condition: str) -> None:
        """Operators outside a field type's set, bad constants and misplaced fields are compile errors."""
        error = lab.error(lab.rule(condition))
        assert error.code.value in ("LOAD_ERR_COMPILE_CONDITION",) and error.location.line == 4, error

    @pytest.mark.parametrize(("condition", "message"), [
        ("t.nope = a", "nonexistent field t.nope"),
        ("t.label = a", "requires an argument"),
        ("t.name[x] = a", "does not take an argument"),
        ("t.args[01] = a", "numeric index"),
        ("t.args[x] = a", "numeric index"),
    ])
    def test_field_errors(self, lab, condition: str, message: str) -> None:
        """Unknown fields and wrong arguments name the problem and its position."""
        error = lab.error(lab.rule(condition))
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION" and error.location.line == 4
        assert message in error.message and "at 1:2" in error.message


class TestRightHandFields:
    @pytest.mark.parametrize(("condition", "payload", "expected"), [
        ("t.name = val(t.other)", {"name": "a", "other": "a"}, True),
        ("t.name = val(t.other)", {"name": "a", "other": "b"}, False),
        ("t.name != val(t.other)", {"name": "a", "other": "b"}, True),
        ("t.name contains val(t.other)", {"name": "abc", "other": "b"}, True),
        ("t.name startswith val(t.other)", {"name": "abc", "other": "ab"}, True),
        ("t.num < val(t.size)", {"num": 2, "size": 5}, True),
        ("t.name in val(t.tags)", {"name": "b", "tags": ["a", "b"]}, True),
        ("t.name in val(t.tags)", {"name": "z", "tags": ["a", "b"]}, False),
        ("t.name = val(t.args[1])", {"name": "b", "args": ["a", "b"]}, True),
        ("t.name = val(t.label[app])", {"name": "web", "labels": {"app": "web"}}, True),
        ("t.name = tolower(t.other)", {"name": "abc", "other": "ABC"}, True),
    ])
    def test_val_and_transformer_on_the_right(self, lab, condition: str, payload: dict[str, Any],
                                              expected: bool) -> None:
        """`val(f)` and transformers compare with another field of the same event."""
        assert lab.matches(condition, **payload) is expected

    def test_bare_field_name_is_a_string(self, lab) -> None:
        """Without `val()` a field name on the right is a literal string (with a hint warning)."""
        engine, result = lab.load(lab.rule("t.name = t.other"))
        assert lab.codes(result) == ["LOAD_COMPILE_CONDITION"] and result.problems[0].location.line == 4
        assert lab.fired(engine, name="t.other", other="t.other") == ["r"]
        assert lab.fired(engine, name="x", other="x") == []


class TestTransformers:
    @pytest.mark.parametrize(("condition", "payload", "expected"), [
        ("tolower(t.name) = abc", {"name": "AbC"}, True),
        ("toupper(t.name) = ABC", {"name": "abc"}, True),
        ("toupper(t.tags) intersects (B)", {"tags": ["a", "b"]}, True),
        ("b64(t.name) = hello", {"name": base64.b64encode(b"hello").decode()}, True),
        ("b64(t.name) = hello", {"name": "aGVsbG8"}, True),
        ("b64(t.name) exists", {"name": "!!!"}, False),
        ("b64(t.buf) contains hi", {"buf": base64.b64encode(b"oh hi")}, True),
        ("basename(t.path) = ls", {"path": "/usr/bin/ls"}, True),
        ("basename(t.path) = ls", {"path": "ls"}, True),
        ('basename(t.path) = ""', {"path": "/usr/bin/"}, True),
        ("len(t.tags) = 3", {"tags": ["a", "b", "c"]}, True),
        ("len(t.name) > 4", {"name": "hello"}, True),
        ("len(t.buf) = 2", {"buf": b"\x00\x01"}, True),
        ('join(",", t.tags) = "a,b"', {"tags": ["a", "b"]}, True),
        ('join("-", (t.name, "x", t.other)) = a-x-b', {"name": "a", "other": "b"}, True),
        ('concat(t.name, ":", t.other) = a:b', {"name": "a", "other": "b"}, True),
        ('concat(t.name, ":", t.other) exists', {"name": "a"}, False),
        ("tolower(toupper(t.name)) = abc", {"name": "aBc"}, True),
        ("tolower(t.name) = val(t.other)", {"name": "ABC", "other": "abc"}, True),
        ('getopt(t.args, "n:v")[n] = kube-system', {"args": ["-n", "kube-system", "-v"]}, True),
        ('getopt(t.args, "n:v")[v] = v', {"args": ["-vn", "x"]}, True),
        ('getopt(t.args, "n:v")[n] = x', {"args": ["-vnx"]}, True),
        ('getopt(t.args, "n:v")[n] exists', {"args": ["-v", "--", "-n", "x"]}, False),
        ('getopt(t.args, "n:v")[n] exists', {"args": ["-v", "pos", "-n", "x"]}, False),
        ('getopt(t.args, "n:v")[n] = ""', {"args": ["-n"]}, True),
        ('getopt(t.args, "n:v") intersects ("?")', {"args": ["-x", "-v"]}, True),
        ('getopt(t.args, "n:v") in (nfoo, v)', {"args": ["--long", "-n", "foo", "-v"]}, True),
        ('getopt(("-n", "kube-system", "-v"), "n:v")[n] = kube-system', {}, True),
    ])
    def test_transformers(self, lab, condition: str, payload: dict[str, Any], expected: bool) -> None:
        """Each transformer maps its input as documented; a missing input gives a missing result."""
        assert lab.matches(condition, **payload) is expected

    @pytest.mark.parametrize("condition", [
        "tolower(t.num) = a", "basename(t.buf) = a", "len(t.num) = 1", 'concat(t.name) = a',
        'join(t.tags, t.tags) = a', "tolower(t.name, t.other) = a", "len(t.tags) contains 1",
        "b64(t.flag) = a",
    ])
    def test_transformer_type_errors(self, lab, condition: str) -> None:
        """Transformers reject inputs of the wrong type or count at compile time."""
        error = lab.error(lab.rule(condition))
        assert error.code.value == "LOAD_ERR_COMPILE_CONDITION" and error.location.line == 4
        assert "at 1:2" in error.message


class TestFieldsOfSeveralValues:
    """An ANY_OF field (libsinsp's proc.aname: every ancestor) matches when any one value does."""

    @pytest.mark.parametrize(("condition", "expected"), [
        ("t.kin = init", True),
        ("t.kin in (nginx, httpd)", True),
        ("t.kin in (apache)", False),
        ("t.kin startswith ngi", True),
        ("t.kin contains ini", True),
        ("t.kin glob 'ht*'", False),
        ("t.kin exists", True),
        ("not t.kin in (bash, nginx, init)", False),
        ("t.kin != bash", True),
    ])
    def test_any_value_decides(self, lab, condition: str, expected: bool) -> None:
        assert lab.matches(condition, kin=["bash", "nginx", "init"]) is expected

    def test_output_shows_the_nearest_value(self, lab) -> None:
        engine = lab.loaded(lab.rule("t.kin in (init)", output="parent=%t.kin"))
        alert = engine.process(lab.event(kin=["bash", "init"]))[0]
        assert alert.output == "parent=bash" and alert.output_fields["t.kin"] == "bash"
