"""Issue 16: the rollout server answers only its trainer (token, JSON, Host), bounds every request and
answers 4xx, never 500, to malformed ones; a refused weight load leaves the served model untouched."""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from videor1.generation.engines import Completion
from videor1.generation.remote import TOKEN_FILE, RemoteEngine
from videor1.generation.server import RolloutServer, ServerLimits


class FakeEngine:
    """Generates a fixed completion; holds a tiny torch model for weight loading."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)

    def generate(self, samples, params):
        return [[Completion(text="ok", token_ids=[1], finished=True)] * params.n for _ in samples]

    def load_weights(self, pairs):
        self.model.load_state_dict(dict(pairs))


@pytest.fixture
def server(tmp_path):
    srv = RolloutServer(FakeEngine(), weights_dir=tmp_path / "w", port=0,
                        limits=ServerLimits(max_body_bytes=1 << 20, max_array_bytes=1 << 16, max_n=4,
                                            max_new_tokens=64, request_timeout_s=5)).start()
    yield srv
    srv.close()


def _post(srv, path, body: bytes, headers: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def _auth(srv) -> dict:
    return {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}


def _image_sample(array_b64: str) -> dict:
    return {"id": "x", "messages": [], "media": {"kind": "image", "array": array_b64}}


def test_token_written_for_the_trainer_and_required(server, tmp_path):
    assert (tmp_path / "w" / TOKEN_FILE).read_text().strip() == server.token
    assert RemoteEngine(server.address, weights_dir=tmp_path / "w").health()["ok"]
    status, body = _post(server, "/generate", b"{}", {"Content-Type": "application/json"})
    assert status == 401 and "token" in body["error"]


def test_text_plain_and_foreign_host_refused(server):
    status, _ = _post(server, "/generate", b"{}", {**_auth(server), "Content-Type": "text/plain"})
    assert status == 415
    status, _ = _post(server, "/generate", b"{}", {**_auth(server), "Host": "evil.example:80"})
    assert status == 421


def test_content_length_is_not_trusted(server):
    for length in ("-1", "1000000000", "abc"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("POST", "/generate")
        for k, v in _auth(server).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", length)
        conn.endheaders()
        # not an integer: uvicorn's HTTP parser answers 400 itself; an integer over the limit: 413
        assert conn.getresponse().status == (413 if length.isdigit() else 400)


def test_malformed_requests_are_4xx_never_500(server):
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2, 3), np.uint8))
    header = buf.getvalue().replace(b"(2, 2, 3)", b"(99999, 99999, 3)")  # asks for ~28 GB
    huge = base64.b64encode(header).decode()
    small = base64.b64encode(buf.getvalue()).decode()
    bodies = [
        {"samples": [_image_sample(huge)]},
        {"samples": [_image_sample(small)], "params": {"n": 1000}},
        {"samples": [_image_sample(small)], "params": {"max_new_tokens": 10**9}},
        {"samples": [_image_sample(small)], "params": {"bogus": 1}},
        {"samples": "nope"},
        {"samples": [{"media": {"kind": "image", "array": "!!!"}}]},
    ]
    for body in bodies:
        status, answer = _post(server, "/generate", json.dumps(body).encode(), _auth(server))
        assert 400 <= status < 500, (body, answer)
    status, _ = _post(server, "/generate", b"[" * 100_000 + b"]" * 100_000, _auth(server))
    assert status == 400
    ok = {"samples": [_image_sample(small)], "params": {"max_new_tokens": 8}}
    status, answer = _post(server, "/generate", json.dumps(ok).encode(), _auth(server))
    assert status == 200 and answer["completions"][0][0]["text"] == "ok", answer


def test_refused_weight_load_leaves_the_model_untouched(server, tmp_path):
    before = {k: v.clone() for k, v in server.engine.model.state_dict().items()}
    wdir = tmp_path / "w"
    save_file({"weight": torch.ones(3, 3), "bias": torch.ones(2)}, str(wdir / "wrong.safetensors"))
    good = wdir / "good.safetensors"
    save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, str(good))
    (wdir / "partial.safetensors").write_bytes(good.read_bytes()[:-4])
    for name in ("wrong.safetensors", "partial.safetensors", "missing.safetensors"):
        status, _ = _post(server, "/load_weights", json.dumps({"file": name, "version": 1}).encode(), _auth(server))
        assert status == 400, name
        assert all(torch.equal(before[k], v) for k, v in server.engine.model.state_dict().items())
    status, _ = _post(server, "/load_weights", json.dumps({"file": "good.safetensors", "version": 2}).encode(),
                      _auth(server))
    assert status == 200 and torch.equal(server.engine.model.weight, torch.ones(2, 2))


def test_off_loopback_warns(capsys):
    srv = RolloutServer(FakeEngine(), weights_dir=None, host="0.0.0.0", port=0)
    srv.close()
    assert "WARNING" in capsys.readouterr().err


def test_total_generation_work_per_request_is_bounded(tmp_path):
    srv = RolloutServer(FakeEngine(), weights_dir=None, port=0,
                        limits=ServerLimits(max_n=4, max_new_tokens=64, max_total_tokens=200)).start()
    try:
        buf = io.BytesIO()
        np.save(buf, np.zeros((2, 2, 3), np.uint8))
        sample = _image_sample(base64.b64encode(buf.getvalue()).decode())
        over = {"samples": [sample, sample], "params": {"n": 4, "max_new_tokens": 32}}   # 2 x 4 x 32 = 256
        status, answer = _post(srv, "/generate", json.dumps(over).encode(), _auth(srv))
        assert status == 400 and "max_total_tokens=200" in answer["error"]
        within = {"samples": [sample, sample], "params": {"n": 3, "max_new_tokens": 32}}  # 192
        status, answer = _post(srv, "/generate", json.dumps(within).encode(), _auth(srv))
        assert status == 200 and len(answer["completions"]) == 2
    finally:
        srv.close()


def test_server_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_total_tokens"):
        ServerLimits(max_total_tokens=0)
