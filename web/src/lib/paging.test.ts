import { describe, expect, it } from "vitest";
import { firstItems } from "./paging";

const rows = Array.from({ length: 1234 }, (_, i) => i);

function api(list: number[]) {
  const asked: [number, number][] = [];
  const fetchPage = async (offset: number, limit: number) => {
    asked.push([offset, limit]);
    return { items: list.slice(offset, offset + limit), total: list.length };
  };
  return { asked, fetchPage };
}

describe("firstItems", () => {
  it("asks page after page until it has as many as are wanted", async () => {
    const { asked, fetchPage } = api(rows);
    const got = await firstItems(fetchPage, 1100);
    expect(got.items).toEqual(rows.slice(0, 1100));
    expect(got.total).toBe(1234);
    expect(asked).toEqual([
      [0, 500],
      [500, 500],
      [1000, 100],
    ]);
  });

  it("stops at the end of the list", async () => {
    const { asked, fetchPage } = api(rows.slice(0, 130));
    const got = await firstItems(fetchPage, 200);
    expect(got.items).toHaveLength(130);
    expect(got.total).toBe(130);
    expect(asked).toEqual([[0, 200]]);
  });

  it("stops when a page comes back empty (the list shrank between two pages)", async () => {
    const fetchPage = async (offset: number) => ({ items: offset === 0 ? [1, 2] : [], total: 10 });
    const got = await firstItems(fetchPage, 5, 2);
    expect(got.items).toEqual([1, 2]);
  });
});
