// Every verifier error of the moma dialect, one case per error.
// RUN: moma-opt %s -split-input-file -verify-diagnostics

func.func @case0(%t: tensor<2x1xi32>) {
  // expected-error @+1 {{expects at least 2 tokens per row (S + 1), got 1}}
  %x, %y = moma.shift_tokens %t : tensor<2x1xi32> -> tensor<0xi32>
  return
}

// -----

func.func @case1(%t: tensor<2x9xi32>) {
  // expected-error @+1 {{flat token count (15) does not match B * S (16)}}
  %x, %y = moma.shift_tokens %t : tensor<2x9xi32> -> tensor<15xi32>
  return
}

// -----

func.func @case2() {
  // expected-error @+1 {{expects a token count divisible by seq_len 8, got 12}}
  %p, %s = moma.token_positions seq_len = 8 : tensor<12xi32>
  return
}

// -----

func.func @case3() {
  // expected-error @+1 {{attribute 'seq_len' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %p, %s = moma.token_positions seq_len = 0 : tensor<16xi32>
  return
}

// -----

func.func @case4(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has 2 groups but 1 results}}
  %a = moma.modality_partition %ids groups ["text", "image"] ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<16xi32> -> tensor<?xi32>
  return
}

// -----

func.func @case5(%ids: tensor<16xi32>) {
  // expected-error @+1 {{expects at least one group}}
  "moma.modality_partition"(%ids) <{group_names = [], group_ranges = []}> : (tensor<16xi32>) -> ()
  return
}

// -----

func.func @case6(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has 2 names but 1 range lists}}
  %a, %b = moma.modality_partition %ids groups ["text", "image"] ranges [array<i64: 0, 4>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @case7(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has an empty name}}
  %a = moma.modality_partition %ids groups [""] ranges [array<i64: 0, 4>] : tensor<16xi32> -> tensor<?xi32>
  return
}

// -----

func.func @case8(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has the name "text" twice}}
  %a, %b = moma.modality_partition %ids groups ["text", "text"] ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @case9(%ids: tensor<16xi32>) {
  // expected-error @+1 {{expects the ranges of "text" as a non-empty list of lo, hi pairs, got 3 values}}
  %a = moma.modality_partition %ids groups ["text"] ranges [array<i64: 0, 4, 8>] : tensor<16xi32> -> tensor<?xi32>
  return
}

// -----

func.func @case10(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has the empty or negative range [5, 5) in "text"}}
  %a = moma.modality_partition %ids groups ["text"] ranges [array<i64: 5, 5>] : tensor<16xi32> -> tensor<?xi32>
  return
}

// -----

func.func @case11(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has overlapping ranges [0, 10) and [5, 20)}}
  %a, %b = moma.modality_partition %ids groups ["text", "image"] ranges [array<i64: 0, 10>, array<i64: 5, 20>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  return
}

// -----

func.func @case12(%x: tensor<?x32xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{input feature size (32) does not match the weight's (64)}}
  %s = moma.router %x, %w : tensor<?x32xf32>, tensor<4x64xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @case13(%x: tensor<8x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{score rows (9) does not match input rows (8)}}
  %s = moma.router %x, %w : tensor<8x64xf32>, tensor<4x64xf32> -> tensor<9x4xf32>
  return
}

// -----

func.func @case14(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>) {
  // expected-error @+1 {{score columns (3) does not match router outputs (4)}}
  %s = moma.router %x, %w : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x3xf32>
  return
}

// -----

func.func @router_noise_rows(%x: tensor<8x64xf32>, %w: tensor<4x64xf32>, %n: tensor<7x4xf32>) {
  // expected-error @+1 {{noise rows (7) does not match score rows (8)}}
  %s = moma.router %x, %w noise %n : tensor<8x64xf32>, tensor<4x64xf32>, tensor<7x4xf32> -> tensor<8x4xf32>
  return
}

// -----

func.func @router_noise_columns(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>, %n: tensor<?x2xf32>) {
  // expected-error @+1 {{noise columns (2) does not match score columns (4)}}
  %s = moma.router %x, %w noise %n : tensor<?x64xf32>, tensor<4x64xf32>, tensor<?x2xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @case15(%s: tensor<?x?xf32>) {
  // expected-error @+1 {{expects a static number of experts}}
  %i, %g = moma.expert_choice %s capacity_factor = 1.0 : tensor<?x?xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return
}

// -----

func.func @case16(%s: tensor<?x4xf32>) {
  // expected-error @+1 {{index rows (2) does not match the number of experts (4)}}
  %i, %g = moma.expert_choice %s capacity_factor = 1.0 : tensor<?x4xf32> -> tensor<2x?xi32>, tensor<4x?xf32>
  return
}

// -----

func.func @case17(%s: tensor<?x4xf32>) {
  // expected-error @+1 {{gate rows (3) does not match the number of experts (4)}}
  %i, %g = moma.expert_choice %s capacity_factor = 1.0 : tensor<?x4xf32> -> tensor<4x?xi32>, tensor<3x?xf32>
  return
}

// -----

func.func @case18(%s: tensor<?x4xf32>) {
  // expected-error @+1 {{gates per expert (3) does not match indices per expert (4)}}
  %i, %g = moma.expert_choice %s capacity_factor = 1.0 : tensor<?x4xf32> -> tensor<4x4xi32>, tensor<4x3xf32>
  return
}

// -----

func.func @case19(%s: tensor<16x4xf32>) {
  // expected-error @+1 {{expects 4 tokens per expert (min(n, ceil(c * n / E)) with n = 16), got 5}}
  %i, %g = moma.expert_choice %s capacity_factor = 1.0 : tensor<16x4xf32> -> tensor<4x5xi32>, tensor<4x5xf32>
  return
}

// -----

func.func @case20(%s: tensor<16x4xf32>) {
  // expected-error @+1 {{attribute 'capacity_factor' failed to satisfy constraint: 64-bit float attribute whose value is > 0}}
  %i, %g = moma.expert_choice %s capacity_factor = 0.0 : tensor<16x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return
}

// -----

func.func @case21(%s: tensor<16x2xf32>) {
  // expected-error @+1 {{expects one score per token ([N, 1]), got 2 columns}}
  %i, %g = moma.mod_select %s capacity = 0.25 : tensor<16x2xf32> -> tensor<?xi32>, tensor<?xf32>
  return
}

// -----

func.func @case22(%s: tensor<16x1xf32>) {
  // expected-error @+1 {{gate count (3) does not match index count (4)}}
  %i, %g = moma.mod_select %s capacity = 0.25 : tensor<16x1xf32> -> tensor<4xi32>, tensor<3xf32>
  return
}

// -----

func.func @case23(%s: tensor<16x1xf32>) {
  // expected-error @+1 {{expects 4 selected tokens (ceil(capacity * N) with N = 16), got 5}}
  %i, %g = moma.mod_select %s capacity = 0.25 : tensor<16x1xf32> -> tensor<5xi32>, tensor<5xf32>
  return
}

// -----

func.func @case24(%s: tensor<16x1xf32>) {
  // expected-error @+1 {{attribute 'capacity' failed to satisfy constraint: 64-bit float attribute whose value is in (0, 1]}}
  %i, %g = moma.mod_select %s capacity = 1.5 : tensor<16x1xf32> -> tensor<?xi32>, tensor<?xf32>
  return
}

// -----

func.func @case25(%x: tensor<16x64xf32>, %y: tensor<4x32xf32>, %i: tensor<4xi32>, %g: tensor<4xf32>) {
  // expected-error @+1 {{block feature size (32) does not match the input's (64)}}
  %o = moma.mod_merge %x, %y[%i] gates %g : tensor<16x64xf32>, tensor<4x32xf32>, tensor<4xi32>, tensor<4xf32>
  return
}

// -----

func.func @case26(%x: tensor<16x64xf32>, %y: tensor<4x64xf32>, %i: tensor<5xi32>, %g: tensor<4xf32>) {
  // expected-error @+1 {{index count (5) does not match block rows (4)}}
  %o = moma.mod_merge %x, %y[%i] gates %g : tensor<16x64xf32>, tensor<4x64xf32>, tensor<5xi32>, tensor<4xf32>
  return
}

// -----

func.func @case27(%x: tensor<16x64xf32>, %y: tensor<4x64xf32>, %i: tensor<4xi32>, %g: tensor<3xf32>) {
  // expected-error @+1 {{gate count (3) does not match block rows (4)}}
  %o = moma.mod_merge %x, %y[%i] gates %g : tensor<16x64xf32>, tensor<4x64xf32>, tensor<4xi32>, tensor<3xf32>
  return
}

// -----

func.func @case28(%x: tensor<?x64xf32>, %w1: tensor<32x48xf32>, %w2: tensor<4x32xf32>) {
  // expected-error @+1 {{w1 input size (48) does not match the input's feature size (64)}}
  %p = moma.aux_router %x, %w1, %w2 : tensor<?x64xf32>, tensor<32x48xf32>, tensor<4x32xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @case29(%x: tensor<?x64xf32>, %w1: tensor<32x64xf32>, %w2: tensor<4x16xf32>) {
  // expected-error @+1 {{w2 input size (16) does not match w1's output size (32)}}
  %p = moma.aux_router %x, %w1, %w2 : tensor<?x64xf32>, tensor<32x64xf32>, tensor<4x16xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @case30(%x: tensor<8x64xf32>, %w1: tensor<32x64xf32>, %w2: tensor<4x32xf32>) {
  // expected-error @+1 {{score rows (7) does not match input rows (8)}}
  %p = moma.aux_router %x, %w1, %w2 : tensor<8x64xf32>, tensor<32x64xf32>, tensor<4x32xf32> -> tensor<7x4xf32>
  return
}

// -----

func.func @case31(%x: tensor<?x64xf32>, %w1: tensor<32x64xf32>, %w2: tensor<4x32xf32>) {
  // expected-error @+1 {{score columns (2) does not match w2's output size (4)}}
  %p = moma.aux_router %x, %w1, %w2 : tensor<?x64xf32>, tensor<32x64xf32>, tensor<4x32xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @case32(%p: tensor<?x4xf32>, %i: tensor<2x?xi32>) {
  // expected-error @+1 {{index rows (2) does not match prediction columns (4)}}
  %l = moma.aux_router_loss %p, %i : tensor<?x4xf32>, tensor<2x?xi32> -> tensor<f32>
  return
}

// -----

func.func @case33(%p: tensor<?x4xf32>, %i: tensor<?xi32>) {
  // expected-error @+1 {{prediction columns (4) does not match the single output a rank-1 index list implies (1)}}
  %l = moma.aux_router_loss %p, %i : tensor<?x4xf32>, tensor<?xi32> -> tensor<f32>
  return
}

// -----

func.func @case34(%p: tensor<?x4xf32>, %i: tensor<4x2x2xi32>) {
  // expected-error @+1 {{expects indices of rank 1 or 2, got rank 3}}
  %l = moma.aux_router_loss %p, %i : tensor<?x4xf32>, tensor<4x2x2xi32> -> tensor<f32>
  return
}

// -----

func.func @case35(%s: tensor<f32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{expects a source of rank >= 1}}
  %r = moma.gather_tokens %s[%i] : tensor<f32>, tensor<4xi32> -> tensor<4xf32>
  return
}

// -----

func.func @case36(%s: tensor<16x64xf32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{expects the result element type 'f32', got 'i32'}}
  %r = moma.gather_tokens %s[%i] : tensor<16x64xf32>, tensor<4xi32> -> tensor<4x64xi32>
  return
}

// -----

func.func @case37(%s: tensor<16x64xf32>, %i: tensor<4x?xi32>) {
  // expected-error @+1 {{expects a result of rank 3 (indices' shape, then the source's trailing dimensions), got rank 2}}
  %r = moma.gather_tokens %s[%i] : tensor<16x64xf32>, tensor<4x?xi32> -> tensor<4x64xf32>
  return
}

// -----

func.func @case38(%s: tensor<16x64xf32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{result dimension 1 (32) does not match the expected size (64)}}
  %r = moma.gather_tokens %s[%i] : tensor<16x64xf32>, tensor<4xi32> -> tensor<4x32xf32>
  return
}

// -----

func.func @case39(%s: tensor<4x64xf32>, %d: tensor<16x64xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects a source of rank 3 (indices' rank + 1), got rank 2}}
  %r = moma.scatter_add_tokens %s into %d[%i] : tensor<4x64xf32>, tensor<4x2xi32> into tensor<16x64xf32>
  return
}

// -----

func.func @case40(%s: tensor<5x64xf32>, %d: tensor<16x64xf32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{source dimension 0 (5) does not match the indices' (4)}}
  %r = moma.scatter_add_tokens %s into %d[%i] : tensor<5x64xf32>, tensor<4xi32> into tensor<16x64xf32>
  return
}

// -----

func.func @case41(%s: tensor<4x32xf32>, %d: tensor<16x64xf32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{source feature size (32) does not match the destination's (64)}}
  %r = moma.scatter_add_tokens %s into %d[%i] : tensor<4x32xf32>, tensor<4xi32> into tensor<16x64xf32>
  return
}

// -----

func.func @case42(%s: tensor<4x64xf32>, %d: tensor<16x64xf32>, %i: tensor<4xi32>, %w: tensor<4x1xf32>) {
  // expected-error @+1 {{expects weights of the indices' rank 1, got rank 2}}
  %r = moma.scatter_add_tokens %s into %d[%i] weights %w : tensor<4x64xf32>, tensor<4xi32>, tensor<4x1xf32> into tensor<16x64xf32>
  return
}

// -----

func.func @case43(%s: tensor<4x64xf32>, %d: tensor<16x64xf32>, %i: tensor<4xi32>, %w: tensor<3xf32>) {
  // expected-error @+1 {{weight dimension 0 (3) does not match the indices' (4)}}
  %r = moma.scatter_add_tokens %s into %d[%i] weights %w : tensor<4x64xf32>, tensor<4xi32>, tensor<3xf32> into tensor<16x64xf32>
  return
}

// -----

func.func @case44(%t: tensor<512x64xf32>, %i: tensor<16xi32>) {
  // expected-error @+1 {{result rows (8) does not match the token count (16)}}
  %h = moma.embed %t[%i] : tensor<512x64xf32>, tensor<16xi32> -> tensor<8x64xf32>
  return
}

// -----

func.func @case45(%t: tensor<512x64xf32>, %i: tensor<16xi32>) {
  // expected-error @+1 {{result feature size (32) does not match the table's (64)}}
  %h = moma.embed %t[%i] : tensor<512x64xf32>, tensor<16xi32> -> tensor<16x32xf32>
  return
}

// -----

func.func @case46(%x: tensor<1x2x3x4xf32>, %w: tensor<1x2x3x4xf32>) {
  // expected-error @+1 {{expects rank 2 (plain) or 3 (stacked experts) operands, got rank 4}}
  %r = moma.linear %x, %w : tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32> -> tensor<1x2x3x4xf32>
  return
}

// -----

func.func @case47(%x: tensor<16x64xf32>, %w: tensor<4x32x64xf32>) {
  // expected-error @+1 {{expects input, weight and result of the same rank}}
  %r = moma.linear %x, %w : tensor<16x64xf32>, tensor<4x32x64xf32> -> tensor<16x32xf32>
  return
}

// -----

func.func @case48(%x: tensor<4x?x64xf32>, %w: tensor<2x32x64xf32>) {
  // expected-error @+1 {{expert count of an operand (2) does not match the input's (4)}}
  %r = moma.linear %x, %w : tensor<4x?x64xf32>, tensor<2x32x64xf32> -> tensor<4x?x32xf32>
  return
}

// -----

func.func @case49(%x: tensor<16x64xf32>, %w: tensor<32x48xf32>) {
  // expected-error @+1 {{input feature size (64) does not match the weight's input size (48)}}
  %r = moma.linear %x, %w : tensor<16x64xf32>, tensor<32x48xf32> -> tensor<16x32xf32>
  return
}

// -----

func.func @case50(%x: tensor<16x64xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{result rows (8) does not match input rows (16)}}
  %r = moma.linear %x, %w : tensor<16x64xf32>, tensor<32x64xf32> -> tensor<8x32xf32>
  return
}

// -----

func.func @case51(%x: tensor<16x64xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{result feature size (64) does not match the weight's output size (32)}}
  %r = moma.linear %x, %w : tensor<16x64xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @case52(%x: tensor<16x64xf32>, %w: tensor<32xf32>) {
  // expected-error @+1 {{weight size (32) does not match the input's feature size (64)}}
  %r = moma.rms_norm %x, %w epsilon = 1.0e-5 : tensor<16x64xf32>, tensor<32xf32>
  return
}

// -----

func.func @case53(%x: tensor<16x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{attribute 'epsilon' failed to satisfy constraint: 64-bit float attribute whose value is > 0}}
  %r = moma.rms_norm %x, %w epsilon = 0.0 : tensor<16x64xf32>, tensor<64xf32>
  return
}

// -----

func.func @case54(%x: tensor<16x64xf32>, %w: tensor<?x16xf32>) {
  // expected-error @+1 {{expects a static [heads, head_dim] weight}}
  %r = moma.head_layer_norm %x, %w, %w epsilon = 1.0e-5 : tensor<16x64xf32>, tensor<?x16xf32>
  return
}

// -----

func.func @case55(%x: tensor<16x64xf32>, %w: tensor<4x8xf32>) {
  // expected-error @+1 {{input feature size (64) does not match heads * head_dim (32)}}
  %r = moma.head_layer_norm %x, %w, %w epsilon = 1.0e-5 : tensor<16x64xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @case56(%x: tensor<16x?xf32>, %p: tensor<16xi32>) {
  // expected-error @+1 {{expects a static feature size}}
  %r = moma.rope %x, %p heads = 4 theta = 1.0e4 : tensor<16x?xf32>, tensor<16xi32>
  return
}

// -----

func.func @case57(%x: tensor<16x64xf32>, %p: tensor<16xi32>) {
  // expected-error @+1 {{expects the feature size 64 to be divisible by 5 heads}}
  %r = moma.rope %x, %p heads = 5 theta = 1.0e4 : tensor<16x64xf32>, tensor<16xi32>
  return
}

// -----

func.func @case58(%x: tensor<16x12xf32>, %p: tensor<16xi32>) {
  // expected-error @+1 {{expects an even head size, got 3}}
  %r = moma.rope %x, %p heads = 4 theta = 1.0e4 : tensor<16x12xf32>, tensor<16xi32>
  return
}

// -----

func.func @case59(%x: tensor<16x64xf32>, %p: tensor<8xi32>) {
  // expected-error @+1 {{position count (8) does not match input rows (16)}}
  %r = moma.rope %x, %p heads = 4 theta = 1.0e4 : tensor<16x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @case60(%x: tensor<16x64xf32>, %p: tensor<8xi32>) {
  // expected-error @+1 {{position count (8) does not match query rows (16)}}
  %r = moma.attention %x, %x, %x, %p, %p heads = 4 scale = 0.25 : tensor<16x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @case61(%x: tensor<16x64xf32>, %p: tensor<16xi32>) {
  // expected-error @+1 {{expects the feature size 64 to be divisible by 3 heads}}
  %r = moma.attention %x, %x, %x, %p, %p heads = 3 scale = 0.25 : tensor<16x64xf32>, tensor<16xi32>
  return
}

// -----

func.func @case62(%x: tensor<1x1x16x64xf32>, %w: tensor<1x1x176x64xf32>, %w2: tensor<1x1x64x176xf32>) {
  // expected-error @+1 {{expects rank 2 (dense) or 3 (stacked experts) operands, got rank 4}}
  %r = moma.swiglu %x, %w, %w, %w2 : tensor<1x1x16x64xf32>, tensor<1x1x176x64xf32>, tensor<1x1x64x176xf32>
  return
}

// -----

func.func @case63(%x: tensor<16x64xf32>, %w: tensor<176x64xf32>, %w2: tensor<1x64x176xf32>) {
  // expected-error @+1 {{expects weights of the input's rank 2}}
  %r = moma.swiglu %x, %w, %w, %w2 : tensor<16x64xf32>, tensor<176x64xf32>, tensor<1x64x176xf32>
  return
}

// -----

func.func @case64(%x: tensor<4x?x64xf32>, %w: tensor<4x176x64xf32>, %w2: tensor<2x64x176xf32>) {
  // expected-error @+1 {{expert count of an operand (2) does not match the input's (4)}}
  %r = moma.swiglu %x, %w, %w, %w2 : tensor<4x?x64xf32>, tensor<4x176x64xf32>, tensor<2x64x176xf32>
  return
}

// -----

func.func @case65(%x: tensor<16x32xf32>, %w: tensor<176x64xf32>, %w2: tensor<64x176xf32>) {
  // expected-error @+1 {{input feature size (32) does not match w1's input size (64)}}
  %r = moma.swiglu %x, %w, %w, %w2 : tensor<16x32xf32>, tensor<176x64xf32>, tensor<64x176xf32>
  return
}

// -----

func.func @case66(%x: tensor<16x64xf32>, %w: tensor<176x64xf32>, %w2: tensor<32x176xf32>) {
  // expected-error @+1 {{w2 output size (32) does not match w1's input size (64)}}
  %r = moma.swiglu %x, %w, %w, %w2 : tensor<16x64xf32>, tensor<176x64xf32>, tensor<32x176xf32>
  return
}

// -----

func.func @case67(%x: tensor<16x64xf32>, %w: tensor<176x64xf32>, %w2: tensor<64x128xf32>) {
  // expected-error @+1 {{w2 input size (128) does not match w1's hidden size (176)}}
  %r = moma.swiglu %x, %w, %w, %w2 : tensor<16x64xf32>, tensor<176x64xf32>, tensor<64x128xf32>
  return
}

// -----

func.func @case68(%l: tensor<16x512xf32>, %t: tensor<8xi32>) {
  // expected-error @+1 {{target count (8) does not match logit rows (16)}}
  %loss, %a = moma.cross_entropy %l, %t z_loss = 0.0 modalities ["all"] ranges [array<i64: 0, 512>] : tensor<16x512xf32>, tensor<8xi32> -> tensor<f32>, tensor<f32>
  return
}

// -----

func.func @case69(%l: tensor<16x512xf32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{has 2 modalities but 1 per-modality losses}}
  %loss, %a = moma.cross_entropy %l, %t z_loss = 0.0 modalities ["text", "image"] ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>
  return
}

// -----

func.func @case70(%l: tensor<16x512xf32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{has a token range beyond the vocabulary (600 > 512)}}
  %loss, %a = moma.cross_entropy %l, %t z_loss = 0.0 modalities ["all"] ranges [array<i64: 0, 600>] : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>
  return
}

// -----

func.func @case71(%l: tensor<16x512xf32>, %t: tensor<16xi32>) {
  // expected-error @+1 {{attribute 'z_loss' failed to satisfy constraint: 64-bit float attribute whose value is >= 0}}
  %loss, %a = moma.cross_entropy %l, %t z_loss = -1.0 modalities ["all"] ranges [array<i64: 0, 512>] : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>
  return
}

// -----

func.func @case72(%s: tensor<?x4xf32>, %p: tensor<?x2xf32>) {
  // expected-error @+1 {{expects scores and predictions of one shape, got 'tensor<?x4xf32>' and 'tensor<?x2xf32>'}}
  %i, %g = moma.causal_route %s, %p : tensor<?x4xf32>, tensor<?x2xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return
}

// -----

func.func @case73(%s: tensor<?x4xf32>, %p: tensor<?x4xf32>) {
  // expected-error @+1 {{index rows (2) does not match score columns (4)}}
  %i, %g = moma.causal_route %s, %p : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<2x?xi32>, tensor<4x?xf32>
  return
}

// -----

func.func @case74(%p: tensor<?x4xf32>, %i: tensor<?xi32>) {
  // expected-error @+1 {{prediction columns (4) does not match the single output a rank-1 index list implies (1)}}
  %d = moma.routing_disagreement %p, %i : tensor<?x4xf32>, tensor<?xi32> -> tensor<f32>
  return
}

// -----

func.func @case75(%p: tensor<?x4xf32>, %i: tensor<4x?xi32>) {
  // expected-error @+1 {{expects counts of type tensor<4xf32>, got 'tensor<3xf32>'}}
  %c = moma.aux_router_confusion %p, %i : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<3xf32>
  return
}

// -----

func.func @case76(%ids: tensor<16xi32>) {
  // expected-error @+1 {{the length of list 1 (8) does not match the token count (lists are padded to it) (16)}}
  %t, %i, %c = moma.padded_modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<16xi32> -> (tensor<16xi32>, tensor<8xi32>), tensor<2xi32>
  return
}

// -----

func.func @case77(%ids: tensor<16xi32>) {
  // expected-error @+1 {{the count vector size (3) does not match the number of groups (2)}}
  %t, %i, %c = moma.padded_modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<16xi32> -> (tensor<16xi32>, tensor<16xi32>), tensor<3xi32>
  return
}

// -----

func.func @case78(%ids: tensor<16xi32>) {
  // expected-error @+1 {{has 2 groups but 1 lists}}
  %t, %c = moma.padded_modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<16xi32> -> (tensor<16xi32>), tensor<2xi32>
  return
}

// -----

func.func @case79(%s: tensor<?x4xf32>, %n: tensor<2xi32>) {
  // expected-error @+1 {{expects a one-element valid count, got 'tensor<2xi32>'}}
  %i, %g = moma.expert_choice %s valid %n capacity_factor = 1.0 : tensor<?x4xf32>, tensor<2xi32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return
}

// -----

func.func @case80(%p: tensor<?x4xf32>, %i: tensor<4x?xi32>, %n: tensor<?xi32>) {
  // expected-error @+1 {{expects a one-element valid count, got 'tensor<?xi32>'}}
  %l = moma.aux_router_loss %p, %i valid %n : tensor<?x4xf32>, tensor<4x?xi32>, tensor<?xi32> -> tensor<f32>
  return
}
