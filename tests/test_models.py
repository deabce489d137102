"""Masker and is_secret_name: secrets never reach printed text or printed data."""

from __future__ import annotations

import json

import pytest

from deploy_lib.models import MASK, Masker, is_secret_name


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "API_KEY",
        "GIT_TOKEN",
        "db_password",
        "DB_PASSWD",
        "client_secret",
        "aws_credentials",
        "pull.git_access_token",
        "env_vars.GITHUB_TOKEN",
    ],
)
def test_names_that_look_secret_are_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "api_url",
        "PYTHONPATH",
        "work_pool.python",
        "keys",
        "key_path",
        "keyword",
        "monkey",
        "registry",
        # only the last part of a dotted key counts
        "secrets.registry",
    ],
)
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_text_replaces_every_occurrence_of_every_secret() -> None:
    masker = Masker(["hunter22", "pnu_abcdef"])
    text = "login hunter22 with pnu_abcdef, again hunter22"
    assert masker.text(text) == f"login {MASK} with {MASK}, again {MASK}"


def test_text_masks_the_longest_secret_first_so_no_tail_leaks() -> None:
    masker = Masker(["abcd", "abcdefgh"])
    assert masker.text("token=abcdefgh") == f"token={MASK}"


def test_values_shorter_than_four_characters_are_not_learned() -> None:
    masker = Masker(["abc", "", None])  # type: ignore[list-item]
    assert masker.values == frozenset()
    assert masker.text("abc is a word") == "abc is a word"


def test_add_learns_values_later_and_stringifies_them() -> None:
    masker = Masker()
    masker.add([12345678])  # type: ignore[list-item]
    assert masker.text("pin 12345678") == f"pin {MASK}"


def test_data_masks_by_secret_name_by_dotted_key_and_by_value() -> None:
    masker = Masker(["s3cr3t-value"])
    data = {
        "api_key": "anything",
        "api_url": "http://host/api?auth=s3cr3t-value",
        "pull": {"repository": "https://example.com/r.git", "branch": "main"},
        "tags": ["ok", "s3cr3t-value"],
        "retries": 3,
    }
    masked = masker.data(data, secret_keys={"pull.repository"})
    assert masked == {
        "api_key": MASK,
        "api_url": f"http://host/api?auth={MASK}",
        "pull": {"repository": MASK, "branch": "main"},
        "tags": ["ok", MASK],
        "retries": 3,
    }
    # the input is left alone
    assert data["api_key"] == "anything"


def test_data_leaves_empty_secret_values_visible_so_missing_ones_show() -> None:
    masked = Masker().data({"api_key": "", "git_access_token": None})
    assert masked == {"api_key": "", "git_access_token": None}


def test_data_descends_into_a_table_named_like_a_secret() -> None:
    masked = Masker().data({"secrets": {"registry": "r.example", "password": "pw-1234"}})
    assert masked == {"secrets": {"registry": "r.example", "password": MASK}}


def test_the_credentials_of_every_url_are_masked() -> None:
    masker = Masker()

    text = masker.text(
        "clone https://x-access-token:ghp_abc123@github.com/o/r.git and "
        "postgres://svc:hunter2@db:5432/x, not mail a@b.c or https://host/path"
    )

    assert text == (
        "clone https://****@github.com/o/r.git and postgres://****@db:5432/x, "
        "not mail a@b.c or https://host/path"
    )


def test_a_secret_echoed_back_escaped_is_masked_too() -> None:
    secret = 'pa"ss\\wörd\n9'
    masker = Masker([secret])
    echoed = [
        json.dumps({"value": secret}),  # JSON, ASCII-escaped
        json.dumps({"value": secret}, ensure_ascii=False),
        repr(secret),  # Python's escapes
        secret.encode("unicode_escape").decode("ascii"),
    ]
    for text in echoed:
        assert "****" in masker.text(text), text
        assert "ss" not in masker.text(text).replace("****", ""), text


def test_a_short_secret_is_masked_by_its_key_not_by_its_value() -> None:
    masker = Masker(["Q#1"])
    masker.add_keys(["job_variables.env.PIN"])
    assert masker.text("Q#1 stays: too short to hunt for in text") == "Q#1 stays: too short to hunt for in text"
    assert masker.data({"job_variables": {"env": {"PIN": "Q#1", "OTHER": "x"}}}) == {
        "job_variables": {"env": {"PIN": "****", "OTHER": "x"}}
    }
    assert masker.is_secret_path("job_variables.env.PIN")
    assert not masker.is_secret_path("job_variables.env.OTHER")
