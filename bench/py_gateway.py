"""The Python gateway of the comparison: what a careful Python service does by
hand — aiohttp server, one shared pooled ClientSession (keep-alive), streamed
passthrough. Usage: py_gateway.py PORT UPSTREAM_URL"""
import sys

import aiohttp
from aiohttp import web

PORT, UPSTREAM = int(sys.argv[1]), sys.argv[2].rstrip("/")
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
       "trailer", "host", "content-length"}


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    async with request.app["session"].request(request.method, UPSTREAM + request.path_qs,
                                              data=body, headers=headers) as up:
        resp = web.StreamResponse(status=up.status,
                                  headers={k: v for k, v in up.headers.items() if k.lower() not in HOP})
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def session(app):
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app["session"].close()


app = web.Application(client_max_size=64 << 20)
app.cleanup_ctx.append(session)
app.router.add_route("*", "/{tail:.*}", proxy)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None)
