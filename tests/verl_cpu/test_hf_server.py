import asyncio
from types import SimpleNamespace

import pytest
import torch
from transformers import GenerationConfig
from verl.workers.config import RolloutConfig

from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
from oar_verl.verl_cpu.hf_server import HFRolloutServer, weights_digest


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tokenizer = byte_tokenizer()
    tiny_qwen2(len(tokenizer), hidden_size=32, seed=3).save_pretrained(path)
    return path, tokenizer


def make_server(saved_model, eos=None, **config):
    path, tokenizer = saved_model
    rollout = RolloutConfig(name="hf", prompt_length=12, response_length=8, tensor_model_parallel_size=1, **config)
    model_config = SimpleNamespace(local_path=str(path), tokenizer=tokenizer, generation_config=GenerationConfig(eos_token_id=eos))
    return HFRolloutServer(rollout, model_config, replica_rank=0)


async def generate_all(server, prompts, params):
    return await asyncio.gather(*[server.generate(p, params, request_id=str(i)) for i, p in enumerate(prompts)])


def teacher_forced_log_probs(model, prompt, tokens, temperature):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(tokens)[:, None])[:, 0]


PROMPTS = [[65, 66, 67], [70, 71, 72, 73, 74, 75], [80]]


def test_greedy_batch_equals_single_generation_and_log_probs(saved_model):
    server = make_server(saved_model, eos=None, ignore_eos=True)
    outputs = asyncio.run(generate_all(server, PROMPTS, {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "logprobs": True}))
    for prompt, output in zip(PROMPTS, outputs):
        single = server.model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=8, pad_token_id=0)[0, len(prompt) :]
        assert output.token_ids == single.tolist()
        expected = teacher_forced_log_probs(server.model, prompt, output.token_ids, 1.0)
        torch.testing.assert_close(torch.tensor(output.log_probs), expected, atol=1e-5, rtol=0)
        assert output.stop_reason == "completed" and output.extra_fields["global_steps"] == 0


def test_sampled_log_probs_use_the_rollout_temperature(saved_model):
    server = make_server(saved_model, ignore_eos=True)
    torch.manual_seed(0)
    outputs = asyncio.run(generate_all(server, PROMPTS, {"temperature": 0.7, "top_p": 1.0, "top_k": -1, "logprobs": True}))
    for prompt, output in zip(PROMPTS, outputs):
        expected = teacher_forced_log_probs(server.model, prompt, output.token_ids, 0.7)
        torch.testing.assert_close(torch.tensor(output.log_probs), expected, atol=1e-5, rtol=0)
    assert outputs[0].log_probs is not None
    plain = asyncio.run(generate_all(server, PROMPTS[:1], {"temperature": 1.0, "logprobs": False}))[0]
    assert plain.log_probs is None


def test_response_budget_and_eos(saved_model):
    server = make_server(saved_model, ignore_eos=True)
    long_prompt = list(range(65, 65 + 10))  # 10 + 8 > 12 + 8 - 10: the budget shrinks to 10
    (output,) = asyncio.run(generate_all(server, [long_prompt], {"temperature": 0.0}))
    assert len(output.token_ids) == 8
    (explicit,) = asyncio.run(generate_all(server, [[65]], {"temperature": 0.0, "max_tokens": 3}))
    assert len(explicit.token_ids) == 3
    first = server.model.generate(torch.tensor([[65]]), do_sample=False, max_new_tokens=8, pad_token_id=0)[0, 1:].tolist()
    stopper = make_server(saved_model, eos=first[2])
    (stopped,) = asyncio.run(generate_all(stopper, [[65]], {"temperature": 0.0}))
    assert stopped.token_ids == first[: first.index(first[2]) + 1], "generation stops at (and keeps) the first EOS"
    (requested,) = asyncio.run(generate_all(make_server(saved_model), [[65]], {"temperature": 0.0, "stop_token_ids": [first[1]]}))
    assert requested.token_ids == first[: first.index(first[1]) + 1], "stop ids of the request end generation too"


def test_load_weights_reports_the_loaded_digest(saved_model):
    server = make_server(saved_model)
    state = {name: torch.randn_like(t) for name, t in server.model.state_dict().items()}
    digest = asyncio.run(server.load_weights(state, global_steps=5))
    assert digest == weights_digest(state.items()) == asyncio.run(server.weights_digest())
    assert server.global_steps == 5
    with pytest.raises(ValueError, match="unexpected"):
        asyncio.run(server.load_weights({"not.a.weight": torch.zeros(1)}))
