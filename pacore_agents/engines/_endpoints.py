"""Endpoint selection for engines that talk to several OpenAI-compatible servers.

Contract (deterministic, per engine):
- every request of one problem goes to the endpoint the problem was first assigned to, so the
  server's prefix cache sees all of that problem's prompts (prefix-cache affinity);
- a problem seen for the first time is assigned to the endpoint with the fewest SEQUENCES in
  flight at that moment (a request of n samples counts n, however it is sent: whole, streamed,
  or as n requests; a streamed sample stops counting when it ends); ties go to the lowest index.
  Sequences, not requests: a vLLM server's batch, its KV cache and its decode time per step grow
  with the sequences it runs, so one n=4 request loads it as four n=1 requests do.

Assignment happens without awaiting, so it is race-free under anyio's cooperative scheduling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from pacore_agents._errors import ConfigError


def normalize_base_url(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/v1``; a URL with a path is kept as given.

    Raises ``ConfigError`` for anything that is not an http(s) URL with a host.
    """
    text = url.strip()
    hint = "write it as http://HOST:PORT/v1 (e.g. http://127.0.0.1:8000/v1)"
    try:
        parts = urlsplit(text)
        port = parts.port  # parsed lazily: a bad port raises only here
    except ValueError as exc:
        raise ConfigError(f"bad OpenAI base URL {display_url(text)!r}: {_port_problem(exc)}; {hint}") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"bad OpenAI base URL {display_url(text)!r}: {hint}")
    if port == 0:
        raise ConfigError(f"bad OpenAI base URL {display_url(text)!r}: port 0 is not a server port; {hint}")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _port_problem(exc: ValueError) -> str:
    text = str(exc).lower()
    if "out of range" in text:
        return "the port must be between 1 and 65535"
    if "port" in text:
        return "the port must be a number"
    return f"not a URL ({exc})"


def display_url(url: str) -> str:
    """The URL without any user:password part, for logs, traces and error messages (also for
    URLs that do not parse: the part before the last ``@`` of the authority is dropped)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rpartition("@")[2] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class EndpointPool:
    """Outstanding-sequence counts and the problem -> endpoint affinity map of one engine."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ConfigError(
                "the openai engine needs at least one base URL (--base-url http://127.0.0.1:8000/v1, or "
                "base_urls = [...] in a study's [engine] table)"
            )
        normalized = [normalize_base_url(u) for u in urls]
        if len(set(normalized)) != len(normalized):
            raise ConfigError(f"duplicate OpenAI base URLs in {list(map(display_url, normalized))}: list each once")
        self.urls: tuple[str, ...] = tuple(normalized)
        self.outstanding: list[int] = [0] * len(normalized)
        self._affinity: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.urls)

    def assign(self, problem_id: str) -> int:
        """The endpoint index for ``problem_id`` (assigning one on first sight)."""
        index = self._affinity.get(problem_id)
        if index is None:
            index = min(range(len(self.urls)), key=lambda i: (self.outstanding[i], i))
            self._affinity[problem_id] = index
        return index

    @property
    def affinity(self) -> dict[str, int]:
        """A copy of the problem -> endpoint index map."""
        return dict(self._affinity)

    @contextmanager
    def in_flight(self, index: int, count: int = 1) -> Iterator[Callable[[], None]]:
        """Count ``count`` sequences as outstanding on endpoint ``index`` while inside; the
        callable yielded ends one of them early (a streamed sample that has finished)."""
        left = [count]

        def one_ended() -> None:
            if left[0]:
                left[0] -= 1
                self.outstanding[index] -= 1

        self.outstanding[index] += count
        try:
            yield one_ended
        finally:
            self.outstanding[index] -= left[0]
