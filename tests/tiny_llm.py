"""A tiny GPT-2 text-generation pipeline built offline, and its logging with mlflow.transformers.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory with the
``tokenizers`` library on a few sentences, the model a 2-layer GPT-2 of width 32 from a
config, with seeded random weights (its text is gibberish; its cost per token is real).

* :func:`build_pipeline` -> a ``transformers`` text-generation pipeline (CPU, greedy).
* :func:`log_tiny_gpt2` -> the URI of that pipeline logged with ``mlflow.transformers``
  (registered as a new version of ``name`` when a name is given), in the current
  tracking URI, inside a run of its own.
"""

from __future__ import annotations

from typing import Any

#: What the tokenizer is trained on; also handy prompts.
CORPUS = [
    "Energy per token is what a language model costs when it answers.",
    "The graphics card draws power while the model reads the prompt and writes the answer.",
    "Measure the energy of every prediction, and record it with the model version.",
    "A tiny model from a config needs no download and runs on a laptop.",
    "Prefill reads the prompt; decode writes one token after another.",
]
#: The end-of-text token: also the padding token, as in GPT-2.
EOS = "<|endoftext|>"
VOCAB_SIZE = 400
#: Pipeline task; the one ``mlflow.transformers`` logs it under.
TASK = "text-generation"


def build_tokenizer() -> Any:
    """A GPT-2 style byte-level BPE tokenizer trained on :data:`CORPUS`, padding on the left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    # Left padding: a decoder-only model continues each prompt from its last token.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        padding_side="left",
    )


def build_pipeline(seed: int = 0, *, n_layer: int = 2, n_embd: int = 32) -> Any:
    """A text-generation pipeline of a randomly initialised GPT-2 (seeded), on the CPU.

    Greedy decoding, so the same prompts give the same tokens on every call.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, pipeline

    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = eos_id
    return pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu")


def log_tiny_gpt2(
    name: str | None = None,
    *,
    seed: int = 0,
    experiment_id: str | None = None,
    params_in_signature: bool = True,
) -> str:
    """Log :func:`build_pipeline`'s pipeline with ``mlflow.transformers`` in a run of its own.

    With ``name``, the model is registered as a new version of that registered model and
    ``models:/<name>/<version>`` is returned; without, the logged model's own URI
    (``models:/<model_id>``). Uses the current tracking (and registry) URI.

    The signature takes a list of prompts and, with ``params_in_signature``, the params
    ``max_new_tokens`` (default 16) and ``batch_size`` (default 1), so that a caller (or a
    request to a served model) can set them; without, no params (like the signature MLflow
    gives the task when the model is logged without one).
    """
    import mlflow
    from mlflow.models import infer_signature

    pipe = build_pipeline(seed)
    # Explicit signature and requirements: no example inference and no pip resolution,
    # which cost seconds and are not what the tests are about. ``max_new_tokens`` and
    # ``batch_size`` as params let a served model be asked for them per request.
    params = {"max_new_tokens": 16, "batch_size": 1} if params_in_signature else None
    signature = infer_signature(["a prompt"], ["an answer"], params=params)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.transformers.log_model(
            pipe,
            name="model",
            task=TASK,
            signature=signature,
            pip_requirements=["transformers", "torch", "tokenizers"],
            registered_model_name=name,
        )
    if name is not None:
        return f"models:/{name}/{info.registered_model_version}"
    return info.model_uri
