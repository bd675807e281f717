package org.vmmkit.testbed.guest;

import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;

/**
 * Just enough of an x86-64 assembler for the built-in guest programs: 64-bit moves, loads and stores
 * at {@code [base + disp]}, a little arithmetic, conditional jumps to labels, port output and HLT.
 * Encodings follow the Intel SDM vol. 2 (REX.W prefix, ModRM, disp8/disp32, rel32 branches).
 */
public final class X86Assembler {
    /** General registers by their encoding number. */
    public enum Reg { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15;
        int n() { return ordinal(); }
    }

    /** Condition codes for {@link #jcc}. */
    public enum Cond { B(0x2), AE(0x3), Z(0x4), NZ(0x5);
        final int cc;
        Cond(int cc) { this.cc = cc; }
    }

    /** A jump target; bound once with {@link #bind}. */
    public static final class Label {
        private int position = -1;
        private final List<Integer> fixups = new ArrayList<>();
    }

    private final ByteArrayOutputStream code = new ByteArrayOutputStream();

    public int position() {
        return code.size();
    }

    public Label label() {
        return new Label();
    }

    public X86Assembler bind(Label label) {
        if (label.position >= 0) throw new IllegalStateException("label bound twice");
        label.position = code.size();
        return this;
    }

    private void b(int v) {
        code.write(v & 0xff);
    }

    private void imm32(int v) {
        for (int i = 0; i < 4; i++) b(v >>> (8 * i));
    }

    private void imm64(long v) {
        for (int i = 0; i < 8; i++) b((int) (v >>> (8 * i)));
    }

    private void rex(boolean w, int reg, int rm) {
        int rex = 0x40 | (w ? 8 : 0) | ((reg >> 3) << 2) | (rm >> 3);
        if (rex != 0x40) b(rex);
    }

    private void modrmReg(int reg, int rm) {
        b(0xC0 | ((reg & 7) << 3) | (rm & 7));
    }

    /** ModRM (+SIB) for {@code [base + disp]}, always with a displacement so RBP/R13 need no case. */
    private void modrmMem(int reg, Reg base, int disp) {
        boolean short8 = disp >= -128 && disp <= 127;
        b((short8 ? 0x40 : 0x80) | ((reg & 7) << 3) | (base.n() & 7));
        if ((base.n() & 7) == 4) b(0x24); // RSP/R12 as base need a SIB byte
        if (short8) b(disp);
        else imm32(disp);
    }

    /** {@code mov dst, imm64}. */
    public X86Assembler movImm(Reg dst, long imm) {
        rex(true, 0, dst.n());
        b(0xB8 + (dst.n() & 7));
        imm64(imm);
        return this;
    }

    /** {@code mov dst, qword [base + disp]}. */
    public X86Assembler load(Reg dst, Reg base, int disp) {
        rex(true, dst.n(), base.n());
        b(0x8B);
        modrmMem(dst.n(), base, disp);
        return this;
    }

    /** {@code mov qword [base + disp], src}. */
    public X86Assembler store(Reg base, int disp, Reg src) {
        rex(true, src.n(), base.n());
        b(0x89);
        modrmMem(src.n(), base, disp);
        return this;
    }

    /** {@code mov dst, src} (64-bit). */
    public X86Assembler mov(Reg dst, Reg src) {
        rex(true, src.n(), dst.n());
        b(0x89);
        modrmReg(src.n(), dst.n());
        return this;
    }

    /** {@code mov dst32, src32} (zero-extends into the 64-bit register). */
    public X86Assembler mov32(Reg dst, Reg src) {
        rex(false, src.n(), dst.n());
        b(0x89);
        modrmReg(src.n(), dst.n());
        return this;
    }

    /** {@code add dst, qword [base + disp]}. */
    public X86Assembler addLoad(Reg dst, Reg base, int disp) {
        rex(true, dst.n(), base.n());
        b(0x03);
        modrmMem(dst.n(), base, disp);
        return this;
    }

    /** {@code add r, imm8} (sign-extended). */
    public X86Assembler addImm(Reg r, int imm8) {
        rex(true, 0, r.n());
        b(0x83);
        modrmReg(0, r.n());
        b(imm8);
        return this;
    }

    public X86Assembler inc(Reg r) {
        rex(true, 0, r.n());
        b(0xFF);
        modrmReg(0, r.n());
        return this;
    }

    public X86Assembler dec(Reg r) {
        rex(true, 0, r.n());
        b(0xFF);
        modrmReg(1, r.n());
        return this;
    }

    /** {@code shl r, imm8}. */
    public X86Assembler shl(Reg r, int imm) {
        rex(true, 0, r.n());
        b(0xC1);
        modrmReg(4, r.n());
        b(imm);
        return this;
    }

    /** {@code or dst, src}. */
    public X86Assembler or(Reg dst, Reg src) {
        rex(true, src.n(), dst.n());
        b(0x09);
        modrmReg(src.n(), dst.n());
        return this;
    }

    /** {@code xor dst32, src32}: the idiom for zeroing a register. */
    public X86Assembler xor32(Reg dst, Reg src) {
        rex(false, src.n(), dst.n());
        b(0x31);
        modrmReg(src.n(), dst.n());
        return this;
    }

    /** {@code test a, b}. */
    public X86Assembler test(Reg a, Reg bReg) {
        rex(true, bReg.n(), a.n());
        b(0x85);
        modrmReg(bReg.n(), a.n());
        return this;
    }

    /** {@code cmp a, b}: flags of {@code a - b}. */
    public X86Assembler cmp(Reg a, Reg bReg) {
        rex(true, bReg.n(), a.n());
        b(0x39);
        modrmReg(bReg.n(), a.n());
        return this;
    }

    /** {@code cmp qword [base + disp], imm8} (sign-extended). */
    public X86Assembler cmpMem(Reg base, int disp, int imm8) {
        rex(true, 0, base.n());
        b(0x83);
        modrmMem(7, base, disp);
        b(imm8);
        return this;
    }

    /** {@code jcc rel32}. */
    public X86Assembler jcc(Cond cond, Label target) {
        b(0x0F);
        b(0x80 | cond.cc);
        rel32(target);
        return this;
    }

    /** {@code jmp rel32}. */
    public X86Assembler jmp(Label target) {
        b(0xE9);
        rel32(target);
        return this;
    }

    private void rel32(Label target) {
        target.fixups.add(code.size());
        imm32(0);
    }

    /** {@code out imm8, al}. */
    public X86Assembler outAl(int port) {
        b(0xE6);
        b(port);
        return this;
    }

    /** {@code out imm8, eax}. */
    public X86Assembler outEax(int port) {
        b(0xE7);
        b(port);
        return this;
    }

    public X86Assembler hlt() {
        b(0xF4);
        return this;
    }

    /** The machine code, with every jump resolved. */
    public byte[] assemble(List<Label> labels) {
        byte[] out = code.toByteArray();
        for (Label l : labels) {
            if (l.position < 0 && !l.fixups.isEmpty()) throw new IllegalStateException("a label is used but never bound");
            for (int at : l.fixups) {
                int rel = l.position - (at + 4);
                for (int i = 0; i < 4; i++) out[at + i] = (byte) (rel >>> (8 * i));
            }
        }
        return out;
    }
}
