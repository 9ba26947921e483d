// Exact arithmetic for display: inputs and sums may be far wider than a double's 53 bits.

/** The digits of a non-negative integer typed by a person, or null if it is not one. */
export function parseUint(text) {
  const trimmed = text.trim().replace(/[\s_,]/g, "");
  if (!/^[0-9]+$/.test(trimmed)) return null;
  return BigInt(trimmed).toString(); // drops leading zeros, keeps every digit
}

/** The integer a string of bits (most significant first) stands for. */
export function fromBinary(bits) {
  return bits === "" ? 0n : BigInt(`0b${bits}`);
}

/** Digits grouped in threes with thin spaces, so a 20-digit number can be read. */
export function grouped(value) {
  return value.toString().replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
}
