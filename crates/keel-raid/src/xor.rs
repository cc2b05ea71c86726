//! RAID-5 parity: plain XOR, written so the compiler vectorises it.

/// `dst ^= src`, byte for byte. Both must have the same length.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "xor of unequal lengths");
    let mut dst_words = dst.chunks_exact_mut(8);
    let mut src_words = src.chunks_exact(8);
    for (d, s) in (&mut dst_words).zip(&mut src_words) {
        let value = u64::from_ne_bytes(d.try_into().expect("8 bytes"))
            ^ u64::from_ne_bytes(s.try_into().expect("8 bytes"));
        d.copy_from_slice(&value.to_ne_bytes());
    }
    for (d, s) in dst_words
        .into_remainder()
        .iter_mut()
        .zip(src_words.remainder())
    {
        *d ^= *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_is_its_own_inverse_and_handles_tails() {
        let a: Vec<u8> = (0..1003u32).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..1003u32).map(|i| (i * 13 + 5) as u8).collect();
        let mut x = a.clone();
        xor_into(&mut x, &b);
        assert!(x.iter().zip(&a).zip(&b).all(|((x, a), b)| *x == a ^ b));
        xor_into(&mut x, &b);
        assert_eq!(x, a);
    }
}
