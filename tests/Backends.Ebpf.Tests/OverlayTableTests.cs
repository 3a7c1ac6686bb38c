namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// The planner's frozen base + overlay table against a plain Dictionary doing the same writes: every snapshot reads as
/// the Dictionary did when it was taken (lookups, count, enumeration), folds included, and a later write never shows
/// through an earlier snapshot (the base is shared, never written).
/// </summary>
public sealed class OverlayTableTests
{
    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 100)]
    [InlineData(3, 500)]
    public void Builder_RandomWrites_EverySnapshotReadsAsTheDictionary(int seed, int baseSize)
    {
        var random = new Random(seed);
        var reference = new Dictionary<int, int>();
        for (var i = 0; i < baseSize; i++) reference[i * 3] = i;
        var table = OverlayTable<int, int>.Over(new Dictionary<int, int>(reference));
        var snapshots = new List<(OverlayTable<int, int> Table, Dictionary<int, int> Expected)> { (table, new(reference)) };
        var folds = 0;
        for (var round = 0; round < 60; round++)
        {
            var builder = table.ToBuilder();
            for (var write = random.Next(1, 80); write > 0; write--)
            {
                // Keys in and out of the base; values that sometimes equal the base's (the overlay entry then goes).
                var key = random.Next(baseSize * 3 + 50);
                switch (random.Next(3))
                {
                    case 0:
                        Assert.Equal(reference.Remove(key), builder.Remove(key));
                        break;
                    case 1:
                        builder[key] = reference[key] = key / 3;
                        break;
                    default:
                        builder[key] = reference[key] = random.Next(5);
                        break;
                }
                Assert.Equal(reference.Count, builder.Count);
                Assert.Equal(reference.TryGetValue(key, out var expected), builder.TryGetValue(key, out var actual));
                Assert.Equal(expected, actual);
            }
            var next = builder.ToImmutable();
            if (next.OverlayCount == 0 && builder.Count > 0 && table.OverlayCount > 0) folds++;
            table = next;
            snapshots.Add((table, new(reference)));
        }
        foreach (var (snapshot, expected) in snapshots) AssertSame(expected, snapshot, baseSize * 3 + 50);
        // A positive control for the fold: the writes outgrew the base at least once.
        Assert.True(folds > 0, $"no fold in 60 rounds over a base of {baseSize}");
    }

    [Fact]
    public void Remove_BaseEntry_HiddenThenBackWhenSetAgain()
    {
        var table = OverlayTable<string, int>.Over(new() { ["a"] = 1, ["b"] = 2 });
        var removed = table.Remove("a");
        Assert.False(removed.ContainsKey("a"));
        Assert.Equal(["b"], removed.Keys);
        Assert.Single(removed);
        var back = removed.SetItem("a", 1);
        Assert.Equal(0, back.OverlayCount); // the base's own value again: no overlay entry left
        Assert.Equal(1, back["a"]);
        Assert.Equal(1, table["a"]); // the first snapshot kept it all along
        Assert.Equal(2, table.Count);
    }

    private static void AssertSame(Dictionary<int, int> expected, OverlayTable<int, int> actual, int keySpace)
    {
        Assert.Equal(expected.Count, actual.Count);
        Assert.Equal(expected.OrderBy(e => e.Key), actual.OrderBy(e => e.Key));
        for (var key = 0; key < keySpace; key++)
        {
            Assert.Equal(expected.TryGetValue(key, out var value), actual.TryGetValue(key, out var found));
            Assert.Equal(value, found);
        }
    }
}
