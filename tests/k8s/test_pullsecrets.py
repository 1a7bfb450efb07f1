"""Merging image-pull secrets into auth.json as upstream's
``pkg/adaptor/k8sops/node.go addAuths`` / ``GetImagePullSecrets`` do (pure part)."""

from __future__ import annotations

import base64
import json

import pytest

from k8s.pullsecrets import PullSecretError, merge, render


def dockerconfigjson(auths: dict[str, object]) -> dict[str, bytes]:
    return {".dockerconfigjson": json.dumps({"auths": auths}).encode()}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_later_secrets_win_per_registry() -> None:
    service_account = dockerconfigjson({"a.io": {"auth": b64("sa:1")}, "b.io": {"auth": "x"}})
    pod = dockerconfigjson({"a.io": {"auth": b64("pod:2")}})
    assert merge([service_account, pod]) == {"a.io": {"auth": b64("pod:2")},
                                             "b.io": {"auth": "x"}}


def test_auth_from_username_and_password_and_nothing_else_kept() -> None:
    merged = merge([dockerconfigjson({
        "a.io": {"username": "u", "password": "p", "email": "e@x"},
        "b.io": {"username": "u"},  # no password and no auth: skipped, as upstream
        "c.io": {"auth": "kept", "username": "ignored", "password": "ignored"},
    })])
    assert merged == {"a.io": {"auth": b64("u:p")}, "c.io": {"auth": "kept"}}


def test_dockercfg_is_read_when_there_is_no_dockerconfigjson() -> None:
    legacy = {".dockercfg": json.dumps({"old.io": {"auth": "o"}}).encode()}
    assert merge([legacy]) == {"old.io": {"auth": "o"}}
    both = {**legacy, **dockerconfigjson({"new.io": {"auth": "n"}})}
    assert merge([both]) == {"new.io": {"auth": "n"}}
    assert merge([{"other-key": b"{}"}]) == {}


def test_render_matches_go_json_marshal() -> None:
    assert render({}) is None
    assert render({"b.io": {"auth": "2"}, "a.io": {"auth": "1"}}) == \
        '{"auths":{"a.io":{"auth":"1"},"b.io":{"auth":"2"}}}'


def test_a_secret_that_is_not_a_docker_config_is_an_error() -> None:
    with pytest.raises(PullSecretError):
        merge([{".dockerconfigjson": b"not json"}])
    with pytest.raises(PullSecretError):
        merge([{".dockercfg": b"[1, 2]"}])
