"""Brute-force OAR definitions (OAR_SPEC sections 3-5), one response at a time, full
logits, no batching, no cropping: what the library's batched code must agree with."""

import torch


def target_from_logits(logits, prompt_length, response, answer_start, answer_end, mode):
    """logits [L, V] of one unpadded sequence; answer token k is predicted at P + k - 1."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    positions = [prompt_length + k - 1 for k in range(answer_start, answer_end)]
    if mode == "first_answer":
        return torch.log_softmax(logits[positions[0]], dim=-1)
    if mode == "answer_mean":
        return torch.log_softmax(torch.stack([logits[p] for p in positions]).mean(dim=0), dim=-1)
    if mode == "answer_logprob":
        values = [torch.log_softmax(logits[p], dim=-1)[response[k]] for p, k in zip(positions, range(answer_start, answer_end))]
        return torch.stack(values).mean()
    if mode == "every_answer":  # [A, V]: one distribution per answer position
        return torch.stack([torch.log_softmax(logits[p], dim=-1) for p in positions])
    raise ValueError(mode)


def shift(clean, other, mode):
    """phi0 - phi, or KL(P0 || P): summed over the vocabulary, and over the answer positions
    for every_answer (the KL of a product of independent distributions)."""
    if mode == "answer_logprob":
        return clean - other
    p = clean.exp()
    return (p * (clean - other)).sum()


def oar_p(model, prompt, response, reasoning_end, answer_start, answer_end, mode, perturbation_id):
    """[reasoning_end] scores by the definition: one full forward per reasoning token."""
    with torch.no_grad():
        sequence = torch.tensor([prompt + response])
        clean = target_from_logits(model(input_ids=sequence).logits[0], len(prompt), response, answer_start, answer_end, mode)
        scores = []
        for t in range(reasoning_end):
            perturbed = sequence.clone()
            perturbed[0, len(prompt) + t] = perturbation_id
            other = target_from_logits(model(input_ids=perturbed).logits[0], len(prompt), response, answer_start, answer_end, mode)
            scores.append(shift(clean, other, mode).abs())
    return torch.stack(scores)


def oar_g(model, prompt, response, reasoning_end, answer_start, answer_end, mode, noise):
    """[reasoning_end] scores by the definition; noise [len(prompt + response), H] already
    zero outside the reasoning positions."""
    sequence = torch.tensor([prompt + response])
    with torch.no_grad():
        clean = target_from_logits(model(input_ids=sequence).logits[0], len(prompt), response, answer_start, answer_end, mode)
    embeds = model.get_input_embeddings()(sequence).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds + noise[None].to(embeds.dtype)).logits[0]
    objective = shift(clean, target_from_logits(logits, len(prompt), response, answer_start, answer_end, mode), mode)
    (grad,) = torch.autograd.grad(objective, embeds)
    products = (grad[0] * embeds[0]).sum(dim=-1).abs()
    return products[len(prompt) : len(prompt) + reasoning_end].detach()
