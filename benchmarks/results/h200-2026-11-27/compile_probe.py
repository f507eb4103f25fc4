"""One-off GPU probe: training-step images/s of deit-small for both backends, eager vs compiled,
and dynamo's graph breaks in the transformers model."""
import json, os, sys, time
import torch
import vitzoo
from vitzoo.bench import DTYPES, _autocast, _sync, _timed, peak_matmul_flops
from vitzoo.data import normalize_batch
from vitzoo.measure import count_flops
from vitzoo.training.optim import build_optimizer

name, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
out = os.environ.get("OUT", ".")
results = {"peak_gflops": peak_matmul_flops(device, torch.bfloat16) / 1e9}
print(results, flush=True)

def explain(zoo):
    model = zoo.model.eval()
    x = torch.randn(2, 3, size, size, device=device)
    with torch.no_grad():
        e = torch._dynamo.explain(model)(pixel_values=x)
    return {"graphs": e.graph_count, "breaks": e.graph_break_count, "reasons": [str(r.reason)[:200] for r in e.break_reasons[:5]]}

for backend in ("transformers", "timm"):
    zoo = vitzoo.load(name, pretrained=False, num_labels=10, image_size=size, device=device, backend=backend)
    flops = count_flops((lambda x: zoo.model(pixel_values=x).logits) if backend == "transformers" else zoo.model, size, zoo.model)
    if backend == "transformers":
        results["explain"] = explain(zoo)
        print(results["explain"], flush=True)
    for compiled in (False, True):
        model = zoo.model.train()
        step_model = torch.compile(model) if compiled else model
        opt = build_optimizer(model, learning_rate=1e-4, weight_decay=0.05, layer_decay=None, depth=12)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        labels = torch.randint(0, 10, (batch,), device=device)
        crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        def step():
            pixels = normalize_batch(images, zoo.spec.preprocessing)
            with _autocast(device, torch.bfloat16):
                out_ = step_model(pixel_values=pixels).logits if backend == "transformers" else step_model(pixels)
                loss = crit(out_, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter(); step(); _sync(device); first = time.perf_counter() - t0
        rate = batch / _timed(step, device, warmup=3, min_seconds=2.0, min_iters=5)
        key = f"{backend}_{'compiled' if compiled else 'eager'}"
        results[key] = {"images_per_second": rate, "mfu": 3 * flops * rate / (results["peak_gflops"] * 1e9), "first_step_s": first}
        print(key, results[key], flush=True)
        with open(os.path.join(out, "compile_probe.json"), "w") as f:
            json.dump(results, f, indent=1)
