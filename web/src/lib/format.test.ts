import { describe, expect, it } from "vitest";
import { ago, celsius, DASH, dateTime, duration, gpuHours, memFraction, memPair, mhz, mib, pct, watts } from "./format";

describe("units", () => {
  it("shows absent values as a dash, never zero", () => {
    for (const f of [pct, mib, watts, celsius, mhz, duration]) {
      expect(f(null)).toBe(DASH);
      expect(f(undefined)).toBe(DASH);
      expect(f(Number.NaN)).toBe(DASH);
    }
  });
  it("formats percent", () => {
    expect(pct(42.4)).toBe("42%");
    expect(pct(0)).toBe("0%");
    expect(pct(99.95, 1)).toBe("100.0%");
  });
  it("converts MiB (DCGM's unit) to readable units", () => {
    expect(mib(512)).toBe("512 MiB");
    expect(mib(81559)).toBe("79.6 GiB");
    expect(mib(8 * 81920)).toBe("640.0 GiB");
    expect(mib(2 * 1024 * 1024)).toBe("2.00 TiB");
  });
  it("pairs used and total memory in one unit", () => {
    expect(memPair(40960, 81920)).toBe("40.0 / 80.0 GiB");
    expect(memPair(null, 81920)).toBe(`${DASH} / 80.0 GiB`);
    expect(memPair(100, 1000)).toBe("100 / 1000 MiB");
    expect(memFraction(40960, 81920)).toBe(0.5);
    expect(memFraction(1, 0)).toBeNull();
    expect(memFraction(null, 10)).toBeNull();
  });
  it("formats power, temperature and clocks", () => {
    expect(watts(312.6)).toBe("313 W");
    expect(watts(25_600)).toBe("25.6 kW");
    expect(celsius(71.4)).toBe("71 °C");
    expect(mhz(1410)).toBe("1410 MHz");
  });
  it("formats durations and ages", () => {
    expect(duration(5)).toBe("5s");
    expect(duration(125)).toBe("2m");
    expect(duration(3600 + 300)).toBe("1h 5m");
    expect(duration(2 * 86400 + 3 * 3600)).toBe("2d 3h");
    expect(ago(100, 100.5)).toBe("just now");
    expect(ago(100, 130)).toBe("30s ago");
    expect(ago(null)).toBe("never");
  });
  it("formats GPU-hours and date-times", () => {
    expect(gpuHours(0.4166)).toBe("0.42");
    expect(gpuHours(0.001123)).toBe("0.0011");
    expect(gpuHours(0)).toBe("0.00");
    expect(gpuHours(12.46)).toBe("12.5");
    expect(gpuHours(1234.4)).toBe("1,234");
    expect(gpuHours(null)).toBe(DASH);
    expect(dateTime(new Date(2025, 0, 5, 9, 3, 7).getTime() / 1000)).toBe("2025-01-05 09:03:07");
    expect(dateTime(null)).toBe(DASH);
  });
});
