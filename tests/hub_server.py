"""A Hugging Face Hub endpoint on localhost for tests with no network: the three routes
huggingface_hub's `snapshot_download` calls (a revision's commit, its file tree, each file by
commit) served from save_pretrained directories, so that the real client downloads into a real
cache. Point HF_ENDPOINT at `HubServer.url`. Each file can be served slowly (`delay` seconds),
to make a download overlap a measurement, and every request is counted."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class HubServer:
    """Repositories `repos[repo][revision] = directory`: each revision a commit whose files are
    the directory's. Use as a context manager (serves in a thread)."""

    def __init__(self, repos: dict[str, dict[str, Path]], delay: float = 0.0):
        self.repos = repos
        self.delay = delay
        self.requests: list[str] = []
        self.commits = {
            (repo, rev): hashlib.sha1(f"{repo}@{rev}".encode()).hexdigest()
            for repo, revs in repos.items()
            for rev in revs
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server.handle(self, body=False)

            def do_GET(self):
                server.handle(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _revision(self, repo: str, revision: str) -> tuple[str, Path] | None:
        """(commit, directory) of a revision named by branch or by commit."""
        for rev, directory in self.repos.get(repo, {}).items():
            commit = self.commits[(repo, rev)]
            if revision in (rev, commit):
                return commit, directory
        return None

    def handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        # /api/models/<org>/<name>/revision/<rev> and /api/models/<org>/<name>/tree/<rev>
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo, what, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            found = self._revision(repo, revision)
            if found is None:
                return self._send(
                    request,
                    404,
                    b'{"error": "Revision not found"}',
                    body,
                    {"X-Error-Code": "RevisionNotFound"},
                )
            commit, directory = found
            files = sorted(p for p in directory.iterdir() if p.is_file())
            if what == "revision":
                payload = {
                    "id": repo,
                    "modelId": repo,
                    "sha": commit,
                    "siblings": [{"rfilename": p.name} for p in files],
                }
            else:
                payload = [
                    {
                        "type": "file",
                        "path": p.name,
                        "size": p.stat().st_size,
                        "oid": _git_oid(p.read_bytes()),
                    }
                    for p in files
                ]
            return self._send(
                request, 200, json.dumps(payload).encode(), body, {"Content-Type": "application/json"}
            )
        # /<org>/<name>/resolve/<rev>/<file>
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            found = self._revision(repo, revision)
            target = found and found[1] / name
            if not target or not target.is_file():
                return self._send(request, 404, b"Entry not found", body, {"X-Error-Code": "EntryNotFound"})
            data = target.read_bytes()
            if body and self.delay:
                time.sleep(self.delay)
            headers = {"X-Repo-Commit": found[0], "ETag": f'"{_git_oid(data)}"'}
            return self._send(request, 200, data, body, headers)
        self._send(request, 404, b"Repository not found", body, {"X-Error-Code": "RepoNotFound"})

    @staticmethod
    def _send(request, status: int, data: bytes, body: bool, headers: dict[str, str]) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)


def _git_oid(data: bytes) -> str:
    """A file's git blob id, as the Hub gives it for files not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


if __name__ == "__main__":  # python tests/hub_server.py REPOS.json DELAY: serves until killed
    import sys

    listing = json.loads(Path(sys.argv[1]).read_text())
    repos = {repo: {rev: Path(d) for rev, d in revs.items()} for repo, revs in listing.items()}
    with HubServer(repos, delay=float(sys.argv[2])) as hub:
        print(hub.url, flush=True)
        threading.Event().wait()
