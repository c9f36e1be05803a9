"""The OpenAI completions protocol: a request body checked once, at entry, and the reply shapes.

Pure Python (no Starlette): `parse_completion_request` turns a JSON body into a
`CompletionRequest` or raises `ApiError`, whose `body()` is OpenAI's error object:

    {"error": {"message": ..., "type": "invalid_request_error", "param": "top_p", "code": null}}

Fields OpenAI defines but this server does not implement are refused by name (400), except
when they carry their neutral value (presence_penalty 0, best_of 1, ...), which asks for nothing.
"""

import time
import uuid
from dataclasses import dataclass

from minigpt2.inputs import is_int, is_number

SUPPORTED = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed",
             "stream", "logprobs", "echo", "user"}
# accepted only with the value that changes nothing
NEUTRAL = {"presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "best_of": (1,),
           "logit_bias": ({},), "suffix": ("",)}
MAX_LOGPROBS = 20
MAX_N = 16
MAX_STOP = 4


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(self, status, message, type="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param, message, code=None):
    return ApiError(400, message, param=param, code=code)


@dataclass
class CompletionRequest:
    """A checked /v1/completions body: prompts as token ids, every setting in range."""
    model: str
    prompts: list                 # [[int]], one list of ids per prompt
    prompt_texts: list            # [str], each prompt as text (for echo)
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    n: int
    stop: tuple
    seed: object
    stream: bool
    logprobs: object              # None or 0..MAX_LOGPROBS
    echo: bool


def _number(body, name, default, lo, hi):
    value = body.get(name)
    if value is None:
        return default
    if not is_number(value) or not lo <= value <= hi:
        raise bad(name, f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _integer(body, name, default, lo, hi):
    value = body.get(name)
    if value is None:
        return default
    if not is_int(value) or not lo <= value <= hi:
        raise bad(name, f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _flag(body, name):
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(name, f"{name} must be true or false, got {value!r}")
    return value


def _prompts(value, tokenizer, vocab_size):
    """prompt: a string, a list of strings, a list of ids, or a list of lists of ids -> [[ids]], [text]."""
    def ids_of(item):
        if isinstance(item, str):
            return tokenizer.encode(item) or [tokenizer.eos_token_id], item   # "" starts from <|endoftext|>
        if isinstance(item, list) and item and all(is_int(t) for t in item):
            if any(not 0 <= t < vocab_size for t in item):
                raise bad("prompt", f"prompt token ids must be in [0, {vocab_size})")
            return list(item), tokenizer.decode(item)
        raise bad("prompt", "prompt must be a string, a list of strings, a list of token ids or a list "
                            "of lists of token ids (non-empty)")

    if value is None:
        raise bad("prompt", "prompt is required")
    if isinstance(value, str) or (isinstance(value, list) and value and all(is_int(t) for t in value)):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise bad("prompt", "prompt must be a string, a list of strings, a list of token ids or a list "
                            "of lists of token ids (non-empty)")
    pairs = [ids_of(item) for item in items]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def parse_completion_request(body, served_model, tokenizer, n_positions, vocab_size):
    """Check a /v1/completions body; raises ApiError (400 bad field, 404 unknown model)."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object")
    unknown = sorted(k for k in body if k not in SUPPORTED
                     and not (k in NEUTRAL and (body[k] is None or body[k] in NEUTRAL[k])))
    if unknown:
        raise bad(unknown[0], f"unsupported field(s): {', '.join(unknown)} (this server implements "
                              f"{', '.join(sorted(SUPPORTED))})", code="unsupported_field")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("model", "model is required (a string; GET /v1/models lists them)")
    if model != served_model:
        raise ApiError(404, f"The model {model!r} does not exist; this server serves {served_model!r}",
                       param="model", code="model_not_found")
    prompts, texts = _prompts(body.get("prompt"), tokenizer, vocab_size)
    max_tokens = _integer(body, "max_tokens", 16, 0, n_positions)
    for ids in prompts:
        if len(ids) + max_tokens > n_positions:
            raise bad("max_tokens", f"This model's maximum context length is {n_positions} tokens, but "
                                    f"you requested {len(ids) + max_tokens} tokens ({len(ids)} in the "
                                    f"prompt, {max_tokens} for the completion); lower max_tokens or shorten the prompt",
                      code="context_length_exceeded")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if (not isinstance(stop, list) or len(stop) > MAX_STOP
            or not all(isinstance(s, str) and s for s in stop)):
        raise bad("stop", f"stop must be a non-empty string or a list of at most {MAX_STOP} of them")
    seed = body.get("seed")
    if seed is not None and (not is_int(seed) or seed < 0):
        raise bad("seed", f"seed must be an integer >= 0, got {seed!r}")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad("user", "user must be a string")
    return CompletionRequest(
        model=model, prompts=prompts, prompt_texts=texts, max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0), top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0, 0, vocab_size), n=_integer(body, "n", 1, 1, MAX_N), stop=tuple(stop),
        seed=seed, stream=_flag(body, "stream"), logprobs=logprobs, echo=_flag(body, "echo"))


def parse_tokenize_request(body):
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or set(body) - {"prompt", "model"}:
        raise bad("prompt", 'tokenize takes {"prompt": "text"} (and optionally "model")')
    return body["prompt"]


def parse_detokenize_request(body, vocab_size):
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if (not isinstance(tokens, list) or not all(is_int(t) and 0 <= t < vocab_size for t in tokens)
            or set(body) - {"tokens", "model"}):
        raise bad("tokens", f'detokenize takes {{"tokens": [ids in 0..{vocab_size - 1}]}} (and optionally "model")')
    return tokens


# ---- replies --------------------------------------------------------------------------------

def new_completion_id():
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def completion_object(completion_id, model, choices, usage=None):
    """The /v1/completions reply (also each streamed chunk, with usage None)."""
    reply = {"id": completion_id, "object": "text_completion", "created": int(time.time()),
             "model": model, "choices": choices}
    if usage is not None:
        reply["usage"] = usage
    return reply


def choice_object(index, text, logprobs=None, finish_reason=None):
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


class LogprobsBuilder:
    """Collects OpenAI's logprobs object: tokens, token_logprobs, top_logprobs, text_offset."""

    def __init__(self, tokenizer, offset=0):
        self.tokenizer = tokenizer
        self.offset = offset                  # text_offset of the next token, in characters
        self.data = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def add(self, token_id, logprob, top):
        """Add one token; top is [(id, logprob)] or None (the first prompt token has no logprob)."""
        text = self.tokenizer.decode([token_id])
        self.data["tokens"].append(text)
        self.data["token_logprobs"].append(logprob)
        alternatives = None
        if top is not None:                   # most likely first; two ids with one text keep the likelier
            alternatives = {}
            for t, lp in top:
                alternatives.setdefault(self.tokenizer.decode([t]), lp)
        self.data["top_logprobs"].append(alternatives)
        self.data["text_offset"].append(self.offset)
        self.offset += len(text)

    def take(self):
        """The collected object, and start a new one (for streamed chunks)."""
        data = self.data
        self.data = {key: [] for key in data}
        return data
