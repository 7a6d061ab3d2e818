"""K processes behind one address: how requests spread over them, and how many
requests open a new connection, for a given gateway configuration."""
import asyncio, json, sys, os
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import aiohttp
from conftest import Worker, Gateway, chat_body, sse_events

def run(extra, k=8, clients=64, per_client=30, tokens=5, interval=10, cpu_us=int(os.environ.get("CPU_US", "0"))):
    w = Worker("--processes", str(k), "--token-interval-ms", str(interval), "--cpu-us-per-token", str(cpu_us), worker_id="w1")
    g = Gateway([w], *extra, threads=2)
    async def main():
        async with aiohttp.ClientSession(g.base) as s:
            async def client():
                for _ in range(per_client):
                    async with s.post("/v1/chat/completions", json=chat_body(max_tokens=tokens, stream=True)) as r:
                        assert r.status == 200
                        async for line in r.content:
                            pass
            await asyncio.gather(*[client() for _ in range(clients)])
    before = w.stats()
    asyncio.run(main())
    st = w.stats()
    g.stop(); w.stop()
    reqs = [p["requests"] - b["requests"] for p, b in zip(st["processes"], before["processes"])]
    total = sum(reqs)
    fair = total / k
    conns = st["connections"] - before["connections"]
    return {"share": [round(r / fair, 2) for r in reqs], "min": round(min(reqs) / fair, 2),
            "max": round(max(reqs) / fair, 2), "new_conn_pct": round(100 * conns / total, 1), "requests": total}

if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:])))
