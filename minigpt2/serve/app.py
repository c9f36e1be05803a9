"""The HTTP side: Starlette routes over one Batcher. Needs the extra: pip install "minigpt2[serve]".

    GET  /                  the "Write With Transformer" page (static/, no CDN)
    GET  /health            {"status": "ok", ...}
    GET  /v1/models         the one model served
    POST /v1/completions    OpenAI's completions API (stream=true: server-sent events)
    POST /tokenize          {"prompt": text} -> {"tokens": [ids], "count", "max_model_len"}
    POST /detokenize        {"tokens": [ids]} -> {"prompt": text}

Every error is OpenAI's {"error": {...}} object. With an api_key, every /v1 request needs
"Authorization: Bearer KEY". Handlers never run the model: they submit jobs to the batcher
thread and await its events, so a slow or vanished client never stalls the others.
"""

import asyncio
import contextlib
import hmac
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from minigpt2.serve import protocol
from minigpt2.serve.batcher import Batcher, DoneEvent, Job, PromptEvent, QueueFull, TokenEvent
from minigpt2.serve.protocol import ApiError

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1 << 20
DISCONNECT_POLL_SECONDS = 0.5


async def read_json(request, limit):
    """The body as JSON; 413 past `limit` bytes (checked while reading), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over the limit of {limit} bytes", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None


class Server:
    """The routes and what they share: model name, tokenizer, batcher, key."""

    def __init__(self, model, tokenizer, model_name, max_batch=8, max_queue=64, api_key=None,
                 max_body=MAX_BODY_BYTES):
        self.tokenizer, self.model_name, self.api_key, self.max_body = tokenizer, model_name, api_key, max_body
        self.config = model.config
        self.batcher = Batcher(model, tokenizer, max_batch=max_batch, max_queue=max_queue)

    def check_key(self, request):
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.startswith("Bearer ") else None
        if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'",
                           type="authentication_error", code="invalid_api_key")

    # ---- small routes ---------------------------------------------------------------------------
    async def index(self, request):
        return FileResponse(STATIC / "index.html")

    async def health(self, request):
        return JSONResponse({"status": "ok", "model": self.model_name, "active": self.batcher.n_active,
                             "waiting": self.batcher.n_waiting, "max_batch": self.batcher.max_batch})

    async def models(self, request):
        self.check_key(request)
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "minigpt2",
             "max_model_len": self.config.n_positions}]})

    async def tokenize(self, request):
        text = protocol.parse_tokenize_request(await read_json(request, self.max_body))
        ids = await asyncio.to_thread(self.tokenizer.encode, text)
        return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len": self.config.n_positions})

    async def detokenize(self, request):
        ids = protocol.parse_detokenize_request(await read_json(request, self.max_body), self.config.vocab_size)
        return JSONResponse({"prompt": self.tokenizer.decode(ids)})

    # ---- completions ----------------------------------------------------------------------------
    async def completions(self, request):
        self.check_key(request)
        body = await read_json(request, self.max_body)
        # tokenizing a prompt of up to max_body bytes takes a while: not on the event loop
        req = await asyncio.to_thread(protocol.parse_completion_request, body, self.model_name,
                                      self.tokenizer, self.config.n_positions, self.config.vocab_size)
        events, jobs = self.submit(req)
        if req.stream:
            return StreamingResponse(self.stream(req, events, jobs), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            return JSONResponse(await self.collect(request, req, events, jobs))
        finally:
            for job in jobs:                      # disconnected or failed: free the rows at once
                job.cancel()

    def submit(self, req):
        """One job per prompt and choice (index = prompt * n + choice); 503 when the queue is full."""
        loop = asyncio.get_running_loop()
        events = asyncio.Queue()

        def emitter(index):
            def emit(event):
                with contextlib.suppress(RuntimeError):            # the loop closed (server shutting down)
                    loop.call_soon_threadsafe(events.put_nowait, (index, event))
            return emit

        jobs = []
        for p, ids in enumerate(req.prompts):
            for choice in range(req.n):
                seed = None if req.seed is None else req.seed + choice     # each choice: its own stream
                jobs.append(Job(ids, req.max_tokens, emitter(p * req.n + choice), temperature=req.temperature,
                                top_k=req.top_k, top_p=req.top_p, seed=seed, stop=req.stop,
                                logprobs=req.logprobs, prompt_logprobs=req.echo and req.logprobs is not None))
        try:
            for job in jobs:
                self.batcher.submit(job)
        except QueueFull as error:
            for job in jobs:
                job.cancel()
            raise ApiError(503, f"The server is busy: {error}; retry later", type="server_error",
                           code="queue_full") from None
        return events, jobs

    def new_logprobs(self, req, p):
        """A LogprobsBuilder for a choice of prompt p; with echo, the prompt's first token comes first."""
        builder = protocol.LogprobsBuilder(self.tokenizer)
        if req.echo:
            builder.add(req.prompts[p][0], None, None)
        return builder

    def add_prompt_logprobs(self, builder, req, p, event):
        for token, (logprob, top) in zip(req.prompts[p][1:], event.logprobs):
            builder.add(token, logprob, top if req.logprobs else [])

    async def collect(self, request, req, events, jobs):
        """Wait for every job; the whole reply. A client that leaves cancels its jobs."""
        n_choices = len(jobs)
        texts = [req.prompt_texts[i // req.n] if req.echo else "" for i in range(n_choices)]
        builders = [self.new_logprobs(req, i // req.n) for i in range(n_choices)] if req.logprobs is not None else None
        finish, n_tokens = [None] * n_choices, 0
        while any(f is None for f in finish):
            try:
                index, event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_SECONDS)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    raise ClientDisconnect() from None
                continue
            if isinstance(event, PromptEvent) and builders:
                self.add_prompt_logprobs(builders[index], req, index // req.n, event)
            elif isinstance(event, TokenEvent):
                texts[index] += event.text
                if builders:
                    builders[index].add(event.token_id, event.logprob, event.top_logprobs if req.logprobs else [])
            elif isinstance(event, DoneEvent):
                if event.finish_reason == "error":
                    raise ApiError(500, f"generation failed: {event.error}", type="server_error")
                texts[index] += event.text
                finish[index] = event.finish_reason
                n_tokens += event.n_tokens
        choices = [protocol.choice_object(i, texts[i], builders[i].take() if builders else None, finish[i])
                   for i in range(n_choices)]
        prompt_tokens = sum(len(ids) for ids in req.prompts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                 "total_tokens": prompt_tokens + n_tokens}
        return protocol.completion_object(protocol.new_completion_id(), self.model_name, choices, usage)

    async def stream(self, req, events, jobs):
        """Server-sent events: one chunk per token per choice, then data: [DONE]."""
        completion_id = protocol.new_completion_id()
        n_choices = len(jobs)
        builders = [self.new_logprobs(req, i // req.n) for i in range(n_choices)] if req.logprobs is not None else None

        def chunk(index, text, finish=None):
            logprobs = builders[index].take() if builders else None
            choice = protocol.choice_object(index, text, logprobs, finish)
            return f"data: {json.dumps(protocol.completion_object(completion_id, self.model_name, [choice]))}\n\n"

        try:
            if req.echo and not builders:         # with logprobs the echo waits for the prompt's scores
                for index in range(n_choices):
                    yield chunk(index, req.prompt_texts[index // req.n])
            remaining = n_choices
            while remaining:
                index, event = await events.get()
                if isinstance(event, PromptEvent) and builders:      # comes before the job's tokens
                    self.add_prompt_logprobs(builders[index], req, index // req.n, event)
                    yield chunk(index, req.prompt_texts[index // req.n])
                elif isinstance(event, TokenEvent):
                    if builders:
                        builders[index].add(event.token_id, event.logprob, event.top_logprobs if req.logprobs else [])
                    yield chunk(index, event.text)
                elif isinstance(event, DoneEvent):
                    remaining -= 1
                    if event.finish_reason == "error":
                        error = ApiError(500, f"generation failed: {event.error}", type="server_error")
                        yield f"data: {json.dumps(error.body())}\n\n"
                        continue
                    yield chunk(index, event.text, event.finish_reason)
            yield "data: [DONE]\n\n"
        finally:
            for job in jobs:                  # the client left (or we are done): free the rows at once
                job.cancel()


# ---- errors and the application -----------------------------------------------------------------

async def api_error(request, error):
    return JSONResponse(error.body(), status_code=error.status)


async def http_error(request, error):
    kind = "not_found" if error.status_code == 404 else "invalid_request_error"
    body = ApiError(error.status_code, f"{request.method} {request.url.path}: {error.detail}", type=kind).body()
    return JSONResponse(body, status_code=error.status_code)


async def server_error(request, error):
    body = ApiError(500, f"internal error: {type(error).__name__}: {error}", type="server_error").body()
    return JSONResponse(body, status_code=500)


async def client_gone(request, error):
    return JSONResponse({}, status_code=499)          # nobody reads it; the jobs were cancelled


def create_app(model, tokenizer, model_name, max_batch=8, max_queue=64, api_key=None, max_body=MAX_BODY_BYTES):
    """The Starlette app; the batcher thread starts and stops with the app's lifespan."""
    server = Server(model, tokenizer, model_name, max_batch, max_queue, api_key, max_body)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        try:
            yield
        finally:
            server.batcher.stop()

    routes = [
        Route("/", server.index),
        Route("/health", server.health),
        Route("/v1/models", server.models),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/tokenize", server.tokenize, methods=["POST"]),
        Route("/detokenize", server.detokenize, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {ApiError: api_error, HTTPException: http_error, ClientDisconnect: client_gone,
                Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = server
    return app


def serve(model, tokenizer, model_name, host="127.0.0.1", port=8000, **options):
    """Run the server until interrupted (uvicorn)."""
    import uvicorn

    app = create_app(model, tokenizer, model_name, **options)
    print(f"minigpt2 serve: {model_name} on http://{host}:{port}/ (OpenAI API at /v1)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
