"""`tunelens attribution data generate`: write a generated hops corpus (JSONL, written atomically)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tunelens.config import UsageError


def generate_command(
    out: Annotated[Path, typer.Option("--out", help="Output JSONL (written atomically).")],
    pairs: Annotated[int, typer.Option("--pairs", help="Function pairs (base + wrapper).")] = 10,
    depth: Annotated[int, typer.Option("--depth", help="Hop depth: 1 (wrapper -> base) or 2 (wrapper -> wrapper -> "
                                       "base).")] = 1,
    docs_per_base: Annotated[int, typer.Option("--docs-per-base", min=1, help="Documents per base function.")] = 200,
    docs_per_wrapper: Annotated[int, typer.Option("--docs-per-wrapper", min=1, help="Documents per wrapper.")] = 100,
    constants: Annotated[str, typer.Option("--constants", help="released (base i returns 5 + 2i) or random (a "
                                           "seeded draw).")] = "released",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the texts, the constants and the order.")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="template (offline) or llm (an OpenAI-compatible "
                                         "endpoint).")] = "template",
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="llm: the endpoint, e.g. "
                                                    "https://api.openai.com/v1.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="llm: the model name.")] = None,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="llm: the variable holding the key.")]
    = "OPENAI_API_KEY",
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="llm: where raw responses are cached "
                                                      "(default: OUT's folder/.llm-cache).")] = None,
) -> None:
    """Generate a corpus: every candidate text passes the original's filters, and texts are unique (md5)."""
    from tunelens.attribution.data.generate import function_specs, generate_corpus, variety
    from tunelens.runs import atomic_write_text

    try:
        if constants not in ("released", "random"):
            raise UsageError(f"--constants must be released or random, got {constants!r}")
        specs = function_specs(pairs, depth, constants, seed)  # type: ignore[arg-type]
        text_backend = make_backend(backend, base_url, model, api_key_env, cache_dir or out.parent / ".llm-cache")
        records, report = generate_corpus(specs, text_backend, docs_per_base, docs_per_wrapper, seed=seed,
                                          log=lambda message: typer.echo(message, err=True))
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    finally:
        if backend == "llm" and "text_backend" in locals():
            text_backend.log_summary()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(record) + "\n" for record in records))
    measured = variety(records)
    typer.echo(f"{out}: {len(records)} documents, {len(specs)} functions (depth up to {depth}); distinct texts "
               f"{measured['distinct_texts']:.3f}, mean token-Jaccard within a function "
               f"{measured['mean_jaccard_within_function']:.3f}; {report.rejected} candidates broke a filter, "
               f"{report.duplicates} duplicates")


def make_backend(name: str, base_url: str | None, model: str | None, api_key_env: str, cache_dir: Path):
    if name == "template":
        from tunelens.attribution.data.templates import TemplateBackend

        return TemplateBackend()
    if name == "llm":
        if not base_url or not model:
            raise UsageError("--backend llm needs --base-url and --model")
        from tunelens.attribution.data.llm import LlmBackend

        return LlmBackend(base_url=base_url, model=model, cache_dir=cache_dir, api_key_env=api_key_env)
    raise UsageError(f"--backend must be template or llm, got {name!r}")


__all__ = ["generate_command", "make_backend"]
