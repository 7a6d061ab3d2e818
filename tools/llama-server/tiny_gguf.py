"""Write a tiny random-weight llama GGUF (F32) with a byte-fallback SentencePiece vocab."""
import random, struct, sys

def s(b):  # gguf string
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b

T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64 = 4, 5, 6, 7, 8, 9, 10

def kv(key, typ, val):
    out = s(key) + struct.pack("<I", typ)
    if typ == T_U32: out += struct.pack("<I", val)
    elif typ == T_I32: out += struct.pack("<i", val)
    elif typ == T_F32: out += struct.pack("<f", val)
    elif typ == T_BOOL: out += struct.pack("<B", 1 if val else 0)
    elif typ == T_STR: out += s(val)
    elif typ == T_ARR:
        et, items = val
        out += struct.pack("<IQ", et, len(items))
        for it in items:
            if et == T_STR: out += s(it)
            elif et == T_F32: out += struct.pack("<f", it)
            elif et == T_I32: out += struct.pack("<i", it)
    return out

def main(path, seed=1, n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128, ctx=512):
    rnd = random.Random(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    words = ["\u2581the", "\u2581a", "\u2581of", "\u2581and", "\u2581to", "\u2581is", "\u2581in", "\u2581it", "\u2581you", "\u2581that", "\u2581hello", "\u2581world", "\u2581"]
    words += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = list(dict.fromkeys(words))  # every piece once: the vocab maps both ways
    tokens += words
    types += [1] * len(words)
    scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(words))]
    n_vocab = len(tokens)
    kvs = [
        kv("general.architecture", T_STR, "llama"),
        kv("general.name", T_STR, "tiny-random"),
        kv("general.alignment", T_U32, 32),
        kv("llama.context_length", T_U32, ctx),
        kv("llama.embedding_length", T_U32, n_embd),
        kv("llama.block_count", T_U32, n_layer),
        kv("llama.feed_forward_length", T_U32, n_ff),
        kv("llama.attention.head_count", T_U32, n_head),
        kv("llama.attention.head_count_kv", T_U32, n_head_kv),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        kv("llama.rope.dimension_count", T_U32, n_embd // n_head),
        kv("llama.vocab_size", T_U32, n_vocab),
        kv("tokenizer.ggml.model", T_STR, "llama"),
        kv("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        kv("tokenizer.ggml.scores", T_ARR, (T_F32, scores)),
        kv("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
        kv("tokenizer.ggml.unknown_token_id", T_U32, 0),
        kv("tokenizer.ggml.bos_token_id", T_U32, 1),
        kv("tokenizer.ggml.eos_token_id", T_U32, 2),
        kv("tokenizer.ggml.add_bos_token", T_BOOL, True),
    ]
    n_kv = n_embd // n_head * n_head_kv
    tensors = [("token_embd.weight", [n_embd, n_vocab], 0.02), ("output_norm.weight", [n_embd], None),
               ("output.weight", [n_embd, n_vocab], 0.02)]
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", [n_embd], None), (p + "attn_q.weight", [n_embd, n_embd], 0.02),
                    (p + "attn_k.weight", [n_embd, n_kv], 0.02), (p + "attn_v.weight", [n_embd, n_kv], 0.02),
                    (p + "attn_output.weight", [n_embd, n_embd], 0.02), (p + "ffn_norm.weight", [n_embd], None),
                    (p + "ffn_gate.weight", [n_embd, n_ff], 0.02), (p + "ffn_down.weight", [n_ff, n_embd], 0.02),
                    (p + "ffn_up.weight", [n_embd, n_ff], 0.02)]
    infos, datas, off = b"", [], 0
    for name, dims, std in tensors:
        n = 1
        for d in dims: n *= d
        vals = [1.0] * n if std is None else [rnd.gauss(0, std) for _ in range(n)]
        data = struct.pack(f"<{n}f", *vals)
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, off)
        pad = (-len(data)) % 32
        datas.append(data + b"\0" * pad)
        off += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos
    head += b"\0" * ((-len(head)) % 32)
    with open(path, "wb") as f:
        f.write(head)
        for d in datas: f.write(d)

if __name__ == "__main__":
    main(sys.argv[1])
