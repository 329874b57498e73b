// InfuseKit's RP2040 harness: the firmware image on rp2040js, lock-stepped with the plant.
//
// One job: run the emulated chip for slices of simulated time and wire its pins to the
// plant. Python (hil_sim/rp2040.py) starts it as `node harness.js BOOTROM FLASH_IMAGE` and
// speaks the same one-line-per-slice protocol as boards/sim.py's serve_stdio:
//
//   -> S t0 step n press enc flags batt nrx     then nrx lines "k HEX" (UART RX at call k)
//   <- R enable alarm s1,...,sn ntx            then ntx lines "k HEX" (UART TX during call k)
//   -> P        power cycle: a fresh chip on the same flash       <- READY
//   -> D FILE   write the whole flash array to FILE                <- OK
//   -> M [0]    metrics (and with 0: reset them)                  <- M key=value ...
//   -> Q        quit
//
// Call k of a slice is the window [t + k*step, t + (k+1)*step) of simulated time. Inputs:
// ADC0 = pressure, ADC1 = battery (12-bit codes the board's read_u16 turns back into mmHg/mV),
// GP6/GP7 quadrature edges spread over the slice up to the plant's encoder count, GP13 end
// stop, GP14 door, GP15 air, GP22 mains. Outputs: STEP GP2 rising edges counted per window,
// signed by DIR GP3; enable = GP4 low; the alarm priority decoded from the lamps GP17/GP18.
//
// What rp2040js 1.4.1 gets wrong and this file fixes (docs/simulator.md, "RP2040 runtime"):
//  1. flash writes: the boot ROM's flash functions become BKPT traps served here on the flash
//     array; erase and program stall the CPU for their datasheet time while the clock, the PIO
//     and the UART receiver go on;
//  2. UART TXINTR: raised when a byte is written (the FIFO drains at once), cleared by ICR,
//     not re-asserted on every check (that storm hangs machine.UART());
//  3. PIO: stepped from the simulated clock at clk_sys / CLKDIV (rp2040js runs it in
//     wall-clock batches and ignores the divider), and only enabled state machines;
//  4. UART RX: bytes enter the 32-byte FIFO at one per 10 bit times; a byte arriving at a full
//     FIFO is lost, as on the chip (counted as rx_overruns).
//  5. watchdog: rp2040js's default trigger handler only logs, and its periodic alarm then
//     re-arms 0 ns ahead (Decrement mode, target 0: 2**32 cycles wrap to 0), so the clock
//     fires it forever at one instant and the slice never returns. Here a trigger disarms it
//     and reboots the chip (a fresh chip on the same flash, as `P` does) at the end of the
//     slice it fired in (counted as wdt_resets).
'use strict';
const fs = require('fs');
const readline = require('readline');
const { RP2040 } = require('rp2040js');
const path = require('path');
// (not in the package's exports map: loaded from beside its entry point)
const { SimulationClock } = require(path.join(path.dirname(require.resolve('rp2040js')),
  'clock', 'simulation-clock.js'));

const [bootromPath, flashPath] = process.argv.slice(2);
const CYCLE_NS = 8;                 // 125 MHz
const BAUD = 115200;
const BYTE_NS = Math.round(10 * 1e9 / BAUD);
const PIN_TX = 0, PIN_RX = 1, PIN_STEP = 2, PIN_DIR = 3, PIN_EN = 4, PIN_A = 6, PIN_B = 7;
const PIN_END = 13, PIN_DOOR = 14, PIN_AIR = 15, PIN_RED = 17, PIN_YEL = 18, PIN_MAINS = 22;
const PIN_PROBE = 25;               // the bench's tick probe (high while App.tick runs)
// W25Q16JV datasheet, typical: page program 0.4 ms (256 B), 4 KB sector erase 45 ms
const PAGE_PROGRAM_NS = 400000, SECTOR_ERASE_NS = 45000000, BLOCK_ERASE_NS = 150000000;
// plant -> ADC codes, the inverse of boards/rp2_pico.py's pressure_mmhg / battery_mv
const P_OFFSET = 3277, P_SPAN = 1300, P_COUNTS = 52428, BATT_NUM = 9900;
const ENC_GAP_NS = 80000;
const QUAD = [0b00, 0b10, 0b11, 0b01];   // A leads B when infusing (forward)

const bootrom = new Uint32Array(new Uint8Array(fs.readFileSync(bootromPath)).buffer);
let flash = new Uint8Array(fs.readFileSync(flashPath));

let mcu, clock, base = 0;           // harness time (ns) = base + clock.nanos
let stallNs = 0;                    // CPU stalled by a flash operation
let rxQueue = [];                   // [timeNs, byte] not yet in the FIFO
let rxNextNs = 0;                   // the line is busy until then
let txBytes = [];                   // [timeNs, byte]
let stepEdges = [];                 // signed STEP rising edges of the current slice: [timeNs, ±1]
let encPos = 0, encTarget = 0, encNextNs = 0, encGapNs = 0;
let lamp = { redOn: -1e18, yelRise: -1e18, yelFall: -1e18, yel: false };
let wdtFired = false;               // the watchdog fired in this slice: reboot at its end
let m = null;                       // metrics
const now = () => base + clock.nanos;

function resetMetrics() {
  m = { steps: 0, fwd: 0, rev: 0, stepsDisabled: 0, lastStepNs: null, gapMaxNs: 0, gapAtNs: 0, ticks: [], probeNs: null,
        erases: 0, programs: 0, stallNs: 0, rxOverruns: 0, encEdges: 0, busyNs: 0, wdtResets: 0 };
}
resetMetrics();

// ------------------------------------------------------------------ boot ROM flash traps
// The ROM's function table (pointer at 0x14) maps two-letter codes to entry points. The first
// instruction of flash_range_erase ('RE') and flash_range_program ('RP') becomes BKPT #n and
// the second BX LR: the call traps to onBreak, which does the work, and returns. (Stubs in
// "free" ROM words are not an option: the zero runs there are the float routines' tables.)
const TRAPS = ['RE', 'RP'];
function patchBootrom() {
  const rom = new Uint8Array(bootrom.buffer);
  const rd16 = (a) => rom[a] | (rom[a + 1] << 8);
  let found = 0;
  for (let p = rd16(0x14); rd16(p); p += 4) {
    const i = TRAPS.indexOf(String.fromCharCode(rom[p], rom[p + 1]));
    if (i < 0) continue;
    const a = rd16(p + 2) & ~1;
    rom[a] = i; rom[a + 1] = 0xbe;          // BKPT #i
    rom[a + 2] = 0x70; rom[a + 3] = 0x47;   // BX LR
    found++;
  }
  if (found !== TRAPS.length) throw new Error(`boot ROM: ${found} of ${TRAPS.length} flash entries`);
}
patchBootrom();

function onBreak(code) {
  const r = mcu.core.registers;
  const name = TRAPS[code];
  if (name === 'RE') {                      // flash_range_erase(addr, count, block, cmd)
    const addr = r[0] >>> 0, count = r[1] >>> 0, block = r[2] >>> 0;
    mcu.flash.fill(0xff, addr, addr + count);
    const big = block >= 65536 && count % 65536 === 0;
    stallNs += big ? (count / 65536) * BLOCK_ERASE_NS : Math.ceil(count / 4096) * SECTOR_ERASE_NS;
    m.erases += Math.ceil(count / 4096);
  } else if (name === 'RP') {               // flash_range_program(addr, data, count)
    const addr = r[0] >>> 0, data = r[1] >>> 0, count = r[2] >>> 0;
    for (let i = 0; i < count; i++) mcu.flash[addr + i] &= mcu.readUint8(data + i);   // NOR
    stallNs += Math.ceil(count / 256) * PAGE_PROGRAM_NS;
    m.programs += Math.ceil(count / 256);
  } else {
    throw new Error(`BKPT #${code} at ${(mcu.core.PC >>> 0).toString(16)}`);
  }
}

// ------------------------------------------------------------------ the chip
function boot() {
  if (clock) base += clock.nanos;
  clock = new SimulationClock();
  mcu = new RP2040(clock);
  mcu.logger = { debug() {}, info() {}, warn() {}, error(n, msg) { process.stderr.write(`${n}: ${msg}\n`); } };
  mcu.loadBootrom(bootrom);               // (resets the flash array: load it after)
  mcu.flash.set(flash);
  flash = mcu.flash;                      // the chip's flash is the harness's from now on
  mcu.onBreak = onBreak;
  // (5) the watchdog: disarm on trigger, reboot at the end of the slice
  const wdt = mcu.peripherals[0x40058];
  wdt.onWatchdogTrigger = () => {
    wdt.alarm.enable = false;
    wdt.timer.enable = false;
    wdtFired = true;
  };
  // (3) PIO from the simulated clock: rp2040js's own wall-clock runner stays off
  for (const pio of mcu.pio) {
    pio.run = () => {};
    pio.nextNs = [0, 0, 0, 0];
    const write = pio.writeUint32.bind(pio);
    pio.writeUint32 = (offset, value) => {
      const was = pio.machines.map((sm) => sm.enabled);
      write(offset, value);
      pio.machines.forEach((sm, i) => { if (sm.enabled && !was[i]) pio.nextNs[i] = now(); });
      pioDue = 0;
    };
  }
  // (2) UART: TXINTR on a write (the FIFO drains at once), cleared by ICR; not on every check
  const uart = mcu.uart[0];
  uart.checkInterrupts = function () {
    this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
  };
  uart.onByte = (b) => {
    txBytes.push([now(), b]);
    uart.interruptStatus |= 1 << 5;
    uart.checkInterrupts();
  };
  mcu.uart[1].checkInterrupts = uart.checkInterrupts;
  mcu.gpio[PIN_STEP].addListener(() => {
    if (!mcu.gpio[PIN_STEP].outputValue) return;
    const t = now();
    const dir = mcu.gpio[PIN_DIR].outputValue ? -1 : 1;
    stepEdges.push([t, dir]);
    m.steps += dir;
    if (dir > 0) m.fwd++; else m.rev++;
    if (mcu.gpio[PIN_EN].outputValue) m.stepsDisabled++;   // a pulse the (disabled) driver ignores
    if (m.lastStepNs !== null && t - m.lastStepNs > m.gapMaxNs && !mcu.gpio[PIN_EN].outputValue) {
      m.gapMaxNs = t - m.lastStepNs;
      m.gapAtNs = t;
    }
    m.lastStepNs = t;
  });
  mcu.gpio[PIN_RED].addListener(() => { if (mcu.gpio[PIN_RED].outputValue) lamp.redOn = now(); });
  mcu.gpio[PIN_YEL].addListener(() => {
    const v = mcu.gpio[PIN_YEL].outputValue;
    if (v && !lamp.yel) lamp.yelRise = now();
    if (!v && lamp.yel) lamp.yelFall = now();
    lamp.yel = v;
  });
  mcu.gpio[PIN_PROBE].addListener(() => {
    if (mcu.gpio[PIN_PROBE].outputValue) m.probeNs = now();
    else if (m.probeNs !== null) { m.ticks.push(now() - m.probeNs); m.probeNs = null; }
  });
  // inputs with their pull-ups' resting levels (rp2040js models no pulls)
  setInputs(0, 0);
  encPos = encTarget = 0;
  mcu.gpio[PIN_A].setInputValue(false);
  mcu.gpio[PIN_B].setInputValue(false);
  mcu.gpio[PIN_RX].setInputValue(true);
  rxQueue = [];
  stallNs = 0;
  lamp = { redOn: -1e18, yelRise: -1e18, yelFall: -1e18, yel: false };
  pioDue = 0;
  // start at boot2 (the first 256 bytes of flash), as the ROM does after its own checks; the
  // ROM's reset path waits for events rp2040js never signals
  mcu.core.PC = 0x10000000;
}

function setInputs(flags, battMv) {
  mcu.gpio[PIN_DOOR].setInputValue(!!(flags & 1));
  mcu.gpio[PIN_AIR].setInputValue(!!(flags & 2));
  mcu.gpio[PIN_END].setInputValue(!!(flags & 4));
  mcu.gpio[PIN_MAINS].setInputValue(!(flags & 8));
  mcu.adc.channelValues[1] = clamp12(Math.round(battMv * 65535 / BATT_NUM / 16));
}
const clamp12 = (v) => Math.max(0, Math.min(4095, v));

// ------------------------------------------------------------------ time
const smPeriod = (sm) => ((sm.clockDivInt || 65536) + sm.clockDivFrac / 256) * CYCLE_NS;
function selfLoop(pio, sm) {
  // a delay loop `label: jmp x-- label` / `jmp y-- label` (no delay, no side-set): the
  // iterations left before it falls through, during which no pin or FIFO changes; else -1
  if (sm.waiting) return -1;
  const op = pio.instructions[sm.pc];
  if (op >>> 13 !== 0 || (op >> 8) & 0x1f || (op & 0x1f) !== sm.pc) return -1;
  const cond = (op >> 5) & 7;
  return cond === 2 ? sm.x >>> 0 : cond === 4 ? sm.y >>> 0 : -1;
}
function pioStep(pio, t) {
  // every enabled state machine whose next PIO clock edge is due; delay loops skipped whole
  let changed = false;
  for (let i = 0; i < 4; i++) {
    const sm = pio.machines[i];
    if (!sm.enabled) continue;
    const div = smPeriod(sm);
    while (pio.nextNs[i] <= t) {
      if (sm.waiting && sm.txFIFO.empty) {  // stalled on PULL: whole periods pass unseen
        pio.nextNs[i] += Math.floor((t - pio.nextNs[i]) / div + 1) * div;
        break;
      }
      const left = selfLoop(pio, sm);
      if (left > 0) {
        const k = Math.min(left, Math.floor((t - pio.nextNs[i]) / div));
        if (k > 0) {
          if (((pio.instructions[sm.pc] >> 5) & 7) === 2) sm.x = (sm.x - k) >>> 0;
          else sm.y = (sm.y - k) >>> 0;
          pio.nextNs[i] += k * div;
          if (pio.nextNs[i] > t) break;
        }
      }
      sm.step();
      pio.nextNs[i] += div;
      changed = true;
    }
  }
  if (changed) pio.checkChangedPins();
}
function pioNext() {
  // the next time a running (not FIFO-stalled) state machine does something; Infinity if none
  let t = Infinity;
  for (const pio of mcu.pio) {
    for (let i = 0; i < 4; i++) {
      const sm = pio.machines[i];
      if (!sm.enabled) continue;
      if (sm.waiting && sm.txFIFO.empty && sm.rxFIFO.empty) continue;   // stalled on a FIFO
      const left = selfLoop(pio, sm);
      const next = pio.nextNs[i] + (left > 0 ? left * smPeriod(sm) : 0);
      t = Math.min(t, Math.max(next, now()));
    }
  }
  return t;
}
function pioActive() {
  for (const pio of mcu.pio) for (const sm of pio.machines) if (sm.enabled) return true;
  return false;
}
function external(t) {
  // due UART RX bytes into the FIFO; due encoder edges onto A/B
  const uart = mcu.uart[0];
  while (rxQueue.length && rxQueue[0][0] <= t) {
    const [, b] = rxQueue.shift();
    if (uart.rxFIFO.full) m.rxOverruns++;
    else uart.feedByte(b);
  }
  while (encPos !== encTarget && encNextNs <= t) {
    encPos += encTarget > encPos ? 1 : -1;
    const ab = QUAD[((encPos % 4) + 4) % 4];
    mcu.gpio[PIN_A].setInputValue(!!(ab & 2));
    mcu.gpio[PIN_B].setInputValue(!!(ab & 1));
    encNextNs += encGapNs;
    m.encEdges++;
  }
}
function nextExternal() {
  let t = Infinity;
  if (rxQueue.length) t = rxQueue[0][0];
  if (encPos !== encTarget) t = Math.min(t, encNextNs);
  return t;
}
let pioDue = 0;                     // no PIO clock edge before this (0: find out)
function advance(dt) {
  // move the clock by dt ns, stepping the PIO on its own clock on the way
  const end = now() + dt;
  if (end < pioDue) { clock.tick(dt); return; }
  if (!pioActive()) { clock.tick(dt); pioDue = Infinity; return; }
  for (;;) {
    const t = Math.min(end, pioNext());
    if (t > now()) clock.tick(t - now());
    for (const pio of mcu.pio) pioStep(pio, now());
    if (now() >= end) break;
    external(now());
  }
  pioDue = Infinity;
  for (const pio of mcu.pio) {
    for (let i = 0; i < 4; i++) if (pio.machines[i].enabled) pioDue = Math.min(pioDue, pio.nextNs[i]);
  }
}
function runUntil(target) {
  const core = mcu.core;
  while (now() < target) {
    const limit = Math.min(target, nextExternal());
    if (stallNs > 0) {                      // flash busy: no instruction executes
      const d = Math.min(stallNs, limit - now());
      advance(d);
      stallNs -= d;
      m.stallNs += d;
    } else if (core.waiting) {
      const alarm = clock.nextAlarm ? base + clock.nextAlarm.nanos : Infinity;
      const t = Math.max(now(), Math.min(limit, alarm));
      if (t > now()) advance(t - now());
      else if (alarm <= now()) clock.tick(0);
    } else {
      const t0 = now();
      // a burst of instructions up to the next external event. The clock's counter is moved
      // directly while no alarm and no PIO clock edge falls due (what clock.tick and advance
      // would do anyway, without their per-instruction cost); at one that does, advance()
      // takes the step, running the alarm callbacks and the PIO at their times. An
      // instruction may schedule an alarm or write the PIO (pioDue = 0): both are read after
      // every instruction.
      const clk = clock, lim = limit - base;
      while (!core.waiting && stallNs === 0) {
        const n0 = clk.nanosCounter;
        if (n0 >= lim) break;
        const dt = core.executeInstruction() * CYCLE_NS;
        const n = n0 + dt;
        const a = clk.nextAlarm;
        if ((a !== null && a.nanos <= n) || n + base >= pioDue) advance(dt);
        else clk.nanosCounter = n;
      }
      m.busyNs += now() - t0;
    }
    external(now());
  }
}

// ------------------------------------------------------------------ the slice
function alarmPrio(t) {
  // IEC 60601-1-8 lamps (boards/rp2_pico.py): red flashing = high; yellow flashing = medium;
  // yellow steady = low. Decoded from the pins over the last pattern period.
  if (t - lamp.redOn < 600e6) return 3;
  if (t - lamp.yelFall < 1700e6 || (lamp.yel && t - lamp.yelRise < 850e6)) return 2;
  if (lamp.yel) return 1;
  return 0;
}
function slice(step, n, press, enc, flags, batt, rx) {
  const stepNs = step * 1e6;
  const t0 = now();
  setInputs(flags, batt);
  const u16 = P_OFFSET + Math.round(press * P_COUNTS / P_SPAN);
  mcu.adc.channelValues[0] = clamp12(Math.round(u16 / 16));
  if (enc !== encTarget) {
    // the plant's count at the slice start, reached by a burst of quadrature edges ENC_GAP_NS
    // apart (the board's hard IRQ needs ~50 µs per edge on the emulated chip: at 40 µs it
    // lost edges), so the firmware's next tick reads it, as the other runtimes' boards read
    // it at the start of a slice. Slices are one control tick (hil_sim/rp2040.py), so a
    // burst is a tick's motion: a few edges, over well under a millisecond at infusion rates.
    const d = Math.abs(enc - encPos);
    encTarget = enc;
    encGapNs = Math.min(ENC_GAP_NS, Math.floor((n * stepNs) / (d + 1)));
    encNextNs = t0;
  }
  for (const [k, data] of rx) {
    let t = Math.max(t0 + k * stepNs, rxNextNs);
    for (const b of data) { rxQueue.push([t, b]); t += BYTE_NS; }
    rxNextNs = t;
  }
  stepEdges = [];
  txBytes = [];
  runUntil(t0 + n * stepNs);
  const steps = new Array(n).fill(0);
  for (const [t, d] of stepEdges) steps[Math.min(n - 1, Math.floor((t - t0) / stepNs))] += d;
  const tx = new Map();
  for (const [t, b] of txBytes) {
    const k = Math.min(n - 1, Math.floor((t - t0) / stepNs));
    if (!tx.has(k)) tx.set(k, []);
    tx.get(k).push(b);
  }
  if (wdtFired) {                          // (5) a watchdog reset: the chip reboots
    wdtFired = false;
    m.wdtResets++;
    boot();
  }
  const en = mcu.gpio[PIN_EN].outputValue ? 0 : 1;
  let out = `R ${en} ${alarmPrio(now())} ${steps.join(',')} ${tx.size}\n`;
  for (const [k, bytes] of tx) out += `${k} ${Buffer.from(bytes).toString('hex').toUpperCase()}\n`;
  return out;
}

function metrics() {
  const ticks = m.ticks.slice().sort((a, b) => a - b);
  const q = (p) => (ticks.length ? Math.round(ticks[Math.min(ticks.length - 1, Math.floor(p * ticks.length))] / 1000) : -1);
  return `M t_ns=${Math.round(now())} steps=${m.steps} fwd=${m.fwd} rev=${m.rev}` +
    ` steps_disabled=${m.stepsDisabled} gap_max_us=${Math.round(m.gapMaxNs / 1000)}` +
    ` gap_at_ms=${Math.round(m.gapAtNs / 1e6)} ticks=${ticks.length} tick_p50_us=${q(0.5)}` +
    ` tick_p90_us=${q(0.9)} tick_p99_us=${q(0.99)} tick_max_us=${ticks.length ? Math.round(ticks[ticks.length - 1] / 1000) : -1}` +
    ` erases=${m.erases} programs=${m.programs} stall_us=${Math.round(m.stallNs / 1000)}` +
    ` rx_overruns=${m.rxOverruns} enc_edges=${m.encEdges} busy_us=${Math.round(m.busyNs / 1000)}` +
    ` wdt_resets=${m.wdtResets}\n`;
}

// ------------------------------------------------------------------ the pipe
boot();
process.stdout.write('READY\n');
const rl = readline.createInterface({ input: process.stdin, terminal: false });
let pending = null;
rl.on('line', (line) => {
  try {
    if (pending) {
      const [k, hex] = line.split(' ');
      pending.rx.push([Number(k), Buffer.from(hex || '', 'hex')]);
      if (pending.rx.length < pending.nrx) return;
      const p = pending; pending = null;
      process.stdout.write(slice(p.step, p.n, p.press, p.enc, p.flags, p.batt, p.rx));
      return;
    }
    const f = line.trim().split(/\s+/);
    if (f[0] === 'S') {
      const [, , step, n, press, enc, flags, batt, nrx] = f.map(Number);
      const p = { step, n, press, enc, flags, batt, nrx, rx: [] };
      if (nrx > 0) { pending = p; return; }
      process.stdout.write(slice(step, n, press, enc, flags, batt, []));
    } else if (f[0] === 'P') {
      boot();
      process.stdout.write('READY\n');
    } else if (f[0] === 'D') {
      fs.writeFileSync(f[1], flash);
      process.stdout.write('OK\n');
    } else if (f[0] === 'M') {
      process.stdout.write(metrics());
      if (f[1] === '0') resetMetrics();
    } else if (f[0] === 'Q') {
      process.exit(0);
    } else if (f[0]) {
      process.stdout.write(`E unknown command ${f[0]}\n`);
    }
  } catch (e) {
    process.stdout.write(`E ${String(e && e.stack || e).replace(/\n/g, ' | ')}\n`);
    process.exit(3);
  }
});
rl.on('close', () => process.exit(0));
