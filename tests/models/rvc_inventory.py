"""RVC's state-dict inventory, transcribed by hand from the reference tables (rvc-reference §1.5, §2, §6.2).

Deliberately independent of rvc_peft's code: the patterns and shapes are the published ones, expanded here.
"""

# (version, sr) -> upsample kernels and rates (rvc-reference §2)
LAYOUTS = {
    ("v1", 32000): ([16, 16, 4, 4, 4], [10, 4, 2, 2, 2]),
    ("v1", 40000): ([16, 16, 4, 4], [10, 10, 2, 2]),
    ("v1", 48000): ([16, 16, 4, 4, 4], [10, 6, 2, 2, 2]),
    ("v2", 32000): ([20, 16, 4, 4], [10, 8, 2, 2]),
    ("v2", 40000): ([16, 16, 4, 4], [10, 10, 2, 2]),
    ("v2", 48000): ([24, 20, 4, 4], [12, 10, 2, 2]),
}

# rvc-reference §1.5 table: keys (all / without enc_q) and parameters (all / without enc_q)
COUNTS = {
    ("v1", 40000, True): (560, 457, 36_360_514, 27_439_042),
    ("v1", 40000, False): (549, 446, 36_289_088, 27_367_616),
    ("v2", 40000, True): (560, 457, 36_458_818, 27_537_346),
    ("v2", 40000, False): (549, 446, 36_387_392, 27_465_920),
    ("v1", 32000, True): (619, 516, 36_294_338, 27_471_170),
    ("v1", 48000, True): (619, 516, 36_400_834, 27_479_362),
    ("v2", 32000, True): (560, 457, 36_880_706, 28_057_538),
    ("v2", 48000, True): (560, 457, 37_638_466, 28_716_994),
}
NONO_KEYS_V1_5STAGE = (606, 503)

# rvc-reference §6.2: discriminator keys / parameters
DISCRIMINATOR_COUNTS = {"v1": (129, 54_968_286), "v2": (165, 71_410_594)}


def expected_shapes(version: str, sr: int, f0: bool) -> dict[str, tuple[int, ...]]:
    """Every key and shape of an official synthesizer (legacy weight-norm names), from the §1.5 table."""
    E = {"v1": 256, "v2": 768}[version]
    kernels, rates = LAYOUTS[(version, sr)]
    spec = 513 if sr == 32000 else 1025
    H, C, F, G, U = 192, 192, 768, 256, 512
    shapes: dict[str, tuple[int, ...]] = {
        "emb_g.weight": (109, G),
        "enc_p.emb_phone.weight": (H, E),
        "enc_p.emb_phone.bias": (H,),
        "enc_p.proj.weight": (2 * C, H, 1),
        "enc_p.proj.bias": (2 * C,),
        "dec.conv_pre.weight": (U, C, 7),
        "dec.conv_pre.bias": (U,),
        "dec.cond.weight": (U, G, 1),
        "dec.cond.bias": (U,),
    }
    if f0:
        shapes["enc_p.emb_pitch.weight"] = (256, H)
        shapes["dec.m_source.l_linear.weight"] = (1, 1)
        shapes["dec.m_source.l_linear.bias"] = (1,)
    for i in range(6):
        p = f"enc_p.encoder.attn_layers.{i}"
        shapes[f"{p}.emb_rel_k"] = (1, 21, 96)
        shapes[f"{p}.emb_rel_v"] = (1, 21, 96)
        for c in "qkvo":
            shapes[f"{p}.conv_{c}.weight"] = (H, H, 1)
            shapes[f"{p}.conv_{c}.bias"] = (H,)
        for n in (1, 2):
            shapes[f"enc_p.encoder.norm_layers_{n}.{i}.gamma"] = (H,)
            shapes[f"enc_p.encoder.norm_layers_{n}.{i}.beta"] = (H,)
        shapes[f"enc_p.encoder.ffn_layers.{i}.conv_1.weight"] = (F, H, 3)
        shapes[f"enc_p.encoder.ffn_layers.{i}.conv_1.bias"] = (F,)
        shapes[f"enc_p.encoder.ffn_layers.{i}.conv_2.weight"] = (H, F, 3)
        shapes[f"enc_p.encoder.ffn_layers.{i}.conv_2.bias"] = (H,)
    stages = len(kernels)
    for s, k in enumerate(kernels):
        cin, cout = U // 2**s, U // 2 ** (s + 1)
        shapes[f"dec.ups.{s}.weight_g"] = (cin, 1, 1)
        shapes[f"dec.ups.{s}.weight_v"] = (cin, cout, k)
        shapes[f"dec.ups.{s}.bias"] = (cout,)
        for j, rk in enumerate([3, 7, 11]):
            r = 3 * s + j
            for conv in ("convs1", "convs2"):
                for n in range(3):
                    shapes[f"dec.resblocks.{r}.{conv}.{n}.weight_g"] = (cout, 1, 1)
                    shapes[f"dec.resblocks.{r}.{conv}.{n}.weight_v"] = (cout, cout, rk)
                    shapes[f"dec.resblocks.{r}.{conv}.{n}.bias"] = (cout,)
        if f0:
            stride = 1
            for rate in rates[s + 1 :]:
                stride *= rate
            kernel = 2 * stride if s < stages - 1 else 1
            shapes[f"dec.noise_convs.{s}.weight"] = (cout, 1, kernel)
            shapes[f"dec.noise_convs.{s}.bias"] = (cout,)
    shapes["dec.conv_post.weight"] = (1, U // 2**stages, 7)
    for f in (0, 2, 4, 6):
        p = f"flow.flows.{f}"
        shapes[f"{p}.pre.weight"] = (H, C // 2, 1)
        shapes[f"{p}.pre.bias"] = (H,)
        shapes[f"{p}.post.weight"] = (C // 2, H, 1)
        shapes[f"{p}.post.bias"] = (C // 2,)
        shapes[f"{p}.enc.cond_layer.weight_g"] = (2 * H * 3, 1, 1)
        shapes[f"{p}.enc.cond_layer.weight_v"] = (2 * H * 3, G, 1)
        shapes[f"{p}.enc.cond_layer.bias"] = (2 * H * 3,)
        for n in range(3):
            shapes[f"{p}.enc.in_layers.{n}.weight_g"] = (2 * H, 1, 1)
            shapes[f"{p}.enc.in_layers.{n}.weight_v"] = (2 * H, H, 5)
            shapes[f"{p}.enc.in_layers.{n}.bias"] = (2 * H,)
            out = 2 * H if n < 2 else H
            shapes[f"{p}.enc.res_skip_layers.{n}.weight_g"] = (out, 1, 1)
            shapes[f"{p}.enc.res_skip_layers.{n}.weight_v"] = (out, H, 1)
            shapes[f"{p}.enc.res_skip_layers.{n}.bias"] = (out,)
    shapes["enc_q.pre.weight"] = (H, spec, 1)
    shapes["enc_q.pre.bias"] = (H,)
    shapes["enc_q.proj.weight"] = (2 * C, H, 1)
    shapes["enc_q.proj.bias"] = (2 * C,)
    shapes["enc_q.enc.cond_layer.weight_g"] = (2 * H * 16, 1, 1)
    shapes["enc_q.enc.cond_layer.weight_v"] = (2 * H * 16, G, 1)
    shapes["enc_q.enc.cond_layer.bias"] = (2 * H * 16,)
    for n in range(16):
        shapes[f"enc_q.enc.in_layers.{n}.weight_g"] = (2 * H, 1, 1)
        shapes[f"enc_q.enc.in_layers.{n}.weight_v"] = (2 * H, H, 5)
        shapes[f"enc_q.enc.in_layers.{n}.bias"] = (2 * H,)
        out = 2 * H if n < 15 else H
        shapes[f"enc_q.enc.res_skip_layers.{n}.weight_g"] = (out, 1, 1)
        shapes[f"enc_q.enc.res_skip_layers.{n}.weight_v"] = (out, H, 1)
        shapes[f"enc_q.enc.res_skip_layers.{n}.bias"] = (out,)
    return shapes
