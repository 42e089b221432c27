// The model's preprocessing, ported line for line from edge_infer/preprocess.py (fit_to_size and
// _crop_pad) and from Pillow's src/libImaging/Resample.c (the bilinear resize), so that a
// lossless image gives the same uint8 tensor in the browser as in Python. Pillow resizes with a
// separable convolution: one pass into an 8-bit image, then the other (resizeBilinear says which
// first), each with coefficients normalised to sum 1 and then rounded to 22-bit fixed point; sums
// start at half a unit and are floored. Doubles in JavaScript are C's doubles, so every step here is exact.
// Pure functions over typed arrays: no DOM, testable in any JavaScript engine. The loops over
// pixels copy the three channels one by one: a loop over them is ~1.5x slower on a 12 MP photo.

const PRECISION_BITS = 22; // Pillow: 32 - 8 - 2
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

// fastai's Resize (validation): the region of the source, in source pixels, that becomes the
// model's input before the resize. It may reach outside the image (pad) or stay inside (crop).
export function cropPadBox(w, h, pre) {
  const [th, tw] = pre.size;
  if (pre.resize === "squish") return { left: 0, top: 0, width: w, height: h };
  const wider = pre.resize === "crop" ? w / tw < h / th : w / tw > h / th;
  const m = wider ? w / tw : h / th;
  const width = Math.trunc(m * tw);
  const height = Math.trunc(m * th);
  return { left: Math.trunc(0.5 * (w - width)), top: Math.trunc(0.5 * (h - height)), width, height };
}

// For each output index along one axis, the source index, or -1 for a zero (padding) pixel:
// crop first, then numpy.pad's "constant" (zeros), "edge" (border) or "reflect" (reflection).
function axisMap(start, length, size, padMode) {
  const lo = Math.max(start, 0);
  const n = Math.min(start + length, size) - lo;
  const map = new Int32Array(length);
  const period = 2 * (n - 1);
  for (let i = 0; i < length; i++) {
    let j = start + i - lo;
    if (j < 0 || j >= n) {
      if (padMode === "zeros") j = -1;
      else if (padMode === "border" || n === 1) j = j < 0 ? 0 : n - 1;
      else {
        j = ((j % period) + period) % period; // numpy "reflect": mirror without the edge pixel
        if (j >= n) j = period - j;
      }
    }
    map[i] = j < 0 ? -1 : lo + j;
  }
  return map;
}

// The box of cropPadBox, cut out and padded (rgb itself when the box is the whole image).
function cropPad(rgb, w, h, box, padMode) {
  if (box.left === 0 && box.top === 0 && box.width === w && box.height === h) return rgb;
  const xs = axisMap(box.left, box.width, w, padMode);
  const ys = axisMap(box.top, box.height, h, padMode);
  const out = new Uint8Array(box.width * box.height * 3);
  for (let y = 0; y < box.height; y++) {
    if (ys[y] < 0) continue;
    const row = ys[y] * w;
    for (let x = 0; x < box.width; x++) {
      if (xs[x] < 0) continue;
      const s = (row + xs[x]) * 3;
      const d = (y * box.width + x) * 3;
      out[d] = rgb[s];
      out[d + 1] = rgb[s + 1];
      out[d + 2] = rgb[s + 2];
    }
  }
  return out;
}

const bilinear = (x) => Math.max(0, 1 - Math.abs(x));

// Resample.c's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1).
export function coefficients(inSize, outSize) {
  const scale = inSize / outSize; // (double)(in1 - in0) / outSize, box = the whole image
  const filterscale = Math.max(scale, 1);
  const support = 1 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = Float64Array.from({ length: xmax }, (_, x) => bilinear((x + xmin - center + 0.5) * ss));
    const ww = w.reduce((sum, k) => sum + k, 0);
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

// C's arithmetic shift by PRECISION_BITS, then clipped to a byte.
const clip8 = (ss) => Math.min(255, Math.max(0, Math.floor(ss / ONE)));

// One pass of the separable resize along rows (horizontal) or columns (vertical) of an RGB image.
function pass(src, w, h, outSize, horizontal) {
  const inSize = horizontal ? w : h;
  const { ksize, bounds, kk } = coefficients(inSize, outSize);
  const ow = horizontal ? outSize : w;
  const oh = horizontal ? h : outSize;
  const out = new Uint8Array(ow * oh * 3);
  const step = horizontal ? 3 : w * 3; // from one tap to the next, in bytes
  for (let yy = 0; yy < oh; yy++) {
    for (let xx = 0; xx < ow; xx++) {
      const o = horizontal ? xx : yy;
      const min = bounds[o * 2];
      const n = bounds[o * 2 + 1];
      let base = horizontal ? (yy * w + min) * 3 : (min * w + xx) * 3;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let t = 0; t < n; t++, base += step) {
        const k = kk[o * ksize + t];
        s0 += src[base] * k;
        s1 += src[base + 1] * k;
        s2 += src[base + 2] * k;
      }
      const d = (yy * ow + xx) * 3;
      out[d] = clip8(s0);
      out[d + 1] = clip8(s1);
      out[d + 2] = clip8(s2);
    }
  }
  return out;
}

// Pillow's Image.resize((tw, th), BILINEAR) of an RGB image, as two passes, each only when its
// size changes. Which pass runs first changes the roundings: Pillow 13 runs the vertical one
// first when the height shrinks by more than twice as many pixels as the width does
// (python-pillow/Pillow#9549; the rule read from 13.0.0's ImagingResample and checked on 3000
// random sizes), Pillow 12 and older always the horizontal one. This port follows Pillow 13; on
// Pillow 12 those sizes differ by at most one grey level.
export function resizeBilinear(rgb, w, h, tw, th) {
  if (tw === w) return th === h ? rgb : pass(rgb, w, h, th, false);
  if (th === h) return pass(rgb, w, h, tw, true);
  if (th < h && h - th > 2 * (w - tw)) return pass(pass(rgb, w, h, th, false), w, th, tw, true);
  return pass(pass(rgb, w, h, tw, true), tw, h, th, false);
}

// edge_infer.preprocess.fit_to_size: RGB bytes [h, w, 3] -> the model's uint8 [th, tw, 3].
export function fitToSize(rgb, w, h, pre) {
  const [th, tw] = pre.size;
  const box = cropPadBox(w, h, pre);
  return resizeBilinear(cropPad(rgb, w, h, box, pre.pad_mode), box.width, box.height, tw, th);
}

// RGBA from a canvas (already composited onto the model's background) -> RGB.
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = rgba[i * 4];
    out[i * 3 + 1] = rgba[i * 4 + 1];
    out[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return out;
}

// The k most likely labels, best first: [[label, p], ...].
export function topK(probabilities, labels, k) {
  const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]);
  return order.slice(0, k).map((i) => [labels[i], probabilities[i]]);
}
