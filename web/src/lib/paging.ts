/** The first `wanted` items of a list the API gives out a page at a time (at most `pageMax` per
 * request): a list that shows "more" asks for everything it shows, so a live refresh keeps
 * every row it has on screen up to date, not only the first page. */
export async function firstItems<T>(
  fetchPage: (offset: number, limit: number) => Promise<{ items: T[]; total: number }>,
  wanted: number,
  pageMax = 500,
): Promise<{ items: T[]; total: number }> {
  const items: T[] = [];
  let total = 0;
  while (items.length < wanted) {
    const page = await fetchPage(items.length, Math.min(pageMax, wanted - items.length));
    items.push(...page.items);
    total = page.total;
    if (page.items.length === 0 || items.length >= total) break;
  }
  return { items, total };
}
