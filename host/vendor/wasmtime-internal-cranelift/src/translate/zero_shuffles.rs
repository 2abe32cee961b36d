//! Vendored addition (see the crate's README.md): `i8x16.shuffle` with an
//! all-zero operand becomes one `pshufb` on x86.
//!
//! LLVM emits `i8x16.swizzle` by a constant mask whose lanes are out of range
//! (so zero) as `i8x16.shuffle x, (v128.const 0), mask`. Cranelift lowers a
//! shuffle of two different operands on x86 as two `pshufb`s, one on each
//! operand, and a `por`; the one on the zero vector always gives zero. A
//! single `pshufb` on `x` whose mask has the high bit set in the lanes that
//! take from zero gives the same bytes. The thumbnail stage's resizer does
//! this twice per source pixel and row.

use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::{
    self, ConstantData, InstBuilder, InstructionData, Opcode, Value, ValueDef, types::I8X16,
};

/// Rewrites every `shuffle` of a value and an all-zero `vconst` in `func` as
/// `x86_pshufb`. Only for x86 targets with `pshufb` (SSSE3); returns how many
/// it rewrote.
pub(crate) fn rewrite(func: &mut ir::Function) -> usize {
    let mut rewritten = 0;
    let mut pos = FuncCursor::new(func);
    while pos.next_block().is_some() {
        while let Some(inst) = pos.next_inst() {
            let InstructionData::Shuffle {
                opcode: Opcode::Shuffle,
                args: [a, b],
                imm,
            } = pos.func.dfg.insts[inst]
            else {
                continue;
            };
            let lanes: [u8; 16] = match pos.func.dfg.immediates.get(imm) {
                Some(data) => match data.as_slice().try_into() {
                    Ok(lanes) => lanes,
                    Err(_) => continue,
                },
                None => continue,
            };
            let (a_zero, b_zero) = (is_zero(&pos.func.dfg, a), is_zero(&pos.func.dfg, b));
            let Some(mask) = pshufb_mask(lanes, a_zero, b_zero) else {
                continue;
            };
            let src = if b_zero { a } else { b };
            let mask = pos.func.dfg.constants.insert(ConstantData::from(&mask[..]));
            let mask = pos.ins().vconst(I8X16, mask);
            pos.func.replace(inst).x86_pshufb(src, mask);
            rewritten += 1;
        }
    }
    rewritten
}

/// The `pshufb` mask that gives `shuffle(a, b, lanes)` from the operand that
/// is not zero: its lane indices, and 0x80 (zero) where a lane takes from the
/// zero operand. `None` when neither or both operands are zero, or when no
/// lane takes from the zero one (Cranelift has better lowerings for those).
fn pshufb_mask(lanes: [u8; 16], a_zero: bool, b_zero: bool) -> Option<[u8; 16]> {
    if a_zero == b_zero || lanes.iter().any(|&l| l > 31) {
        return None;
    }
    let from_zero = |l: u8| (l < 16) == a_zero;
    if !lanes.iter().any(|&l| from_zero(l)) {
        return None;
    }
    Some(lanes.map(|l| if from_zero(l) { 0x80 } else { l & 15 }))
}

/// Whether `v` is a `vconst` of sixteen zero bytes, through aliases and
/// bitcasts.
fn is_zero(dfg: &ir::DataFlowGraph, v: Value) -> bool {
    let mut v = dfg.resolve_aliases(v);
    loop {
        let ValueDef::Result(inst, 0) = dfg.value_def(v) else {
            return false;
        };
        match dfg.insts[inst] {
            InstructionData::UnaryConst {
                opcode: Opcode::Vconst,
                constant_handle,
            } => {
                let data = dfg.constants.get(constant_handle);
                return data.len() == 16 && data.as_slice().iter().all(|&b| b == 0);
            }
            InstructionData::LoadNoOffset {
                opcode: Opcode::Bitcast,
                arg,
                ..
            } => v = dfg.resolve_aliases(arg),
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pshufb_mask, rewrite};
    use cranelift_codegen::ir::{
        AbiParam, ConstantData, Function, InstBuilder, InstructionData, Opcode, Signature,
        UserFuncName, types::I8X16,
    };
    use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
    use target_lexicon::PointerWidth;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    #[test]
    fn a_shuffle_with_zero_becomes_one_pshufb() {
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params.push(AbiParam::new(I8X16));
        sig.returns.push(AbiParam::new(I8X16));
        let mut func = Function::with_name_signature(UserFuncName::default(), sig);
        let mut ctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut ctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        b.seal_block(block);
        let x = b.block_params(block)[0];
        let zero = b.func.dfg.constants.insert(ConstantData::from(&[0u8; 16][..]));
        let zero = b.ins().vconst(I8X16, zero);
        let lanes: [u8; 16] = [0, 16, 3, 16, 1, 16, 4, 16, 2, 16, 5, 16, 16, 16, 16, 16];
        let imm = b.func.dfg.immediates.push(ConstantData::from(&lanes[..]));
        let widened = b.ins().shuffle(x, zero, imm);
        // Two operands that are not zero: left as they are.
        let mixed = b.ins().shuffle(widened, x, imm);
        b.ins().return_(&[mixed]);
        b.finalize(TargetFrontendConfig {
            default_call_conv: CallConv::SystemV,
            pointer_width: PointerWidth::U64,
            page_size_align_log2: 12,
        });

        assert_eq!(rewrite(&mut func), 1);
        let inst = func.dfg.value_def(widened).unwrap_inst();
        assert_eq!(func.dfg.insts[inst].opcode(), Opcode::X86Pshufb);
        let [src, mask] = func.dfg.inst_args(inst) else {
            panic!("x86_pshufb takes two operands");
        };
        assert_eq!(*src, x);
        let InstructionData::UnaryConst {
            opcode: Opcode::Vconst,
            constant_handle,
        } = func.dfg.insts[func.dfg.value_def(*mask).unwrap_inst()]
        else {
            panic!("the mask is not a vconst");
        };
        let z = 0x80;
        assert_eq!(
            func.dfg.constants.get(constant_handle).as_slice(),
            &[0, z, 3, z, 1, z, 4, z, 2, z, 5, z, z, z, z, z]
        );
        let inst = func.dfg.value_def(mixed).unwrap_inst();
        assert_eq!(func.dfg.insts[inst].opcode(), Opcode::Shuffle);
    }

    #[test]
    fn masks_take_the_nonzero_operand_and_zero_the_rest() {
        // The resizer's u8x3 mask: bytes 0..5 of `x` widened, the rest zero.
        let lanes = [0, 16, 3, 16, 1, 16, 4, 16, 2, 16, 5, 16, 16, 16, 16, 16];
        let z = 0x80;
        assert_eq!(
            pshufb_mask(lanes, false, true),
            Some([0, z, 3, z, 1, z, 4, z, 2, z, 5, z, z, z, z, z])
        );
        // The zero vector first: lanes 16..31 pick from the second operand.
        let lanes = [16, 0, 31, 15, 17, 1, 18, 2, 19, 3, 20, 4, 21, 5, 22, 6];
        assert_eq!(
            pshufb_mask(lanes, true, false),
            Some([0, z, 15, z, 1, z, 2, z, 3, z, 4, z, 5, z, 6, z])
        );
        // Nothing taken from zero, both or neither zero: left to Cranelift.
        let first = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        assert_eq!(pshufb_mask(first, false, true), None);
        assert_eq!(pshufb_mask(lanes, false, false), None);
        assert_eq!(pshufb_mask(lanes, true, true), None);
    }
}
