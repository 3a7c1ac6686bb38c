using System.Collections;
using System.Collections.Immutable;
using System.Diagnostics.CodeAnalysis;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// An immutable table as a frozen base plus an immutable overlay of the changes since: what a full sync planned in a
/// <see cref="Dictionary{TKey,TValue}"/> becomes the base as it is (no copy, no freeze: a cold sync's 10,000 × 10 tables
/// cost a few milliseconds instead of the ~0.5 s of building an <see cref="ImmutableDictionary{TKey,TValue}"/>), and each
/// partial sync writes only into the overlay (a set value, or a removal of a base entry), so it stays proportional to the
/// change. When the overlay outgrows the base, <see cref="Builder.ToImmutable"/> folds both into a new base (one copy per
/// base-size of changes: amortized constant per change). The base is never written after the table is made.
/// </summary>
public sealed class OverlayTable<TKey, TValue> : IReadOnlyDictionary<TKey, TValue>
    where TKey : notnull
{
    /// <summary>An overlay entry: a value set, or (<see cref="Removed"/>) a base entry gone.</summary>
    internal readonly record struct Change(bool Removed, TValue Value);

    private readonly Dictionary<TKey, TValue> _base;
    private readonly ImmutableDictionary<TKey, Change> _overlay;

    private OverlayTable(Dictionary<TKey, TValue> @base, ImmutableDictionary<TKey, Change> overlay, int count)
    {
        _base = @base;
        _overlay = overlay;
        Count = count;
    }

    public static OverlayTable<TKey, TValue> Empty { get; } = new([], ImmutableDictionary<TKey, Change>.Empty, 0);

    /// <summary>
    /// A table over <paramref name="frozen"/>, which the caller hands over: nothing may write to it afterwards
    /// (a full sync's own table, or one read from the kernel).
    /// </summary>
    public static OverlayTable<TKey, TValue> Over(Dictionary<TKey, TValue> frozen)
    {
        ArgumentNullException.ThrowIfNull(frozen);
        return new(frozen, ImmutableDictionary<TKey, Change>.Empty, frozen.Count);
    }

    /// <summary>A copy of <paramref name="entries"/> as a table (tests, and callers holding an immutable dictionary).</summary>
    public static implicit operator OverlayTable<TKey, TValue>(ImmutableDictionary<TKey, TValue> entries) =>
        Over(new Dictionary<TKey, TValue>(entries ?? throw new ArgumentNullException(nameof(entries))));

    public int Count { get; }

    /// <summary>How many changes the overlay holds (0 right after a full sync or a fold): for tests and the README's numbers.</summary>
    public int OverlayCount => _overlay.Count;

    public TValue this[TKey key] => TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"{key} is not in the table");

    public IEnumerable<TKey> Keys => this.Select(e => e.Key);

    public IEnumerable<TValue> Values => this.Select(e => e.Value);

    public bool ContainsKey(TKey key) => TryGetValue(key, out _);

    public bool TryGetValue(TKey key, [MaybeNullWhen(false)] out TValue value) => Find(_base, _overlay, key, out value);

    public TValue? GetValueOrDefault(TKey key) => TryGetValue(key, out var value) ? value : default;

    /// <summary>The table with <paramref name="key"/> set (a copy of the overlay path only).</summary>
    public OverlayTable<TKey, TValue> SetItem(TKey key, TValue value)
    {
        var builder = ToBuilder();
        builder[key] = value;
        return builder.ToImmutable();
    }

    /// <summary>The table without <paramref name="key"/>.</summary>
    public OverlayTable<TKey, TValue> Remove(TKey key)
    {
        var builder = ToBuilder();
        builder.Remove(key);
        return builder.ToImmutable();
    }

    /// <summary>A mutable view writing into a copy of the overlay (the base is shared, never written).</summary>
    public Builder ToBuilder() => new(_base, _overlay.ToBuilder(), Count);

    public IEnumerator<KeyValuePair<TKey, TValue>> GetEnumerator() => Enumerate(_base, _overlay).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private static bool Find(Dictionary<TKey, TValue> @base, IReadOnlyDictionary<TKey, Change> overlay, TKey key, [MaybeNullWhen(false)] out TValue value)
    {
        if (overlay.Count > 0 && overlay.TryGetValue(key, out var change))
        {
            value = change.Value;
            return !change.Removed;
        }
        return @base.TryGetValue(key, out value);
    }

    /// <summary>The base's entries the overlay leaves alone, then the overlay's values.</summary>
    private static IEnumerable<KeyValuePair<TKey, TValue>> Enumerate(Dictionary<TKey, TValue> @base, IReadOnlyDictionary<TKey, Change> overlay)
    {
        foreach (var entry in @base)
            if (overlay.Count == 0 || !overlay.ContainsKey(entry.Key))
                yield return entry;
        foreach (var (key, change) in overlay)
            if (!change.Removed)
                yield return new(key, change.Value);
    }

    /// <summary>
    /// The planner's working table in a partial sync: reads see the base through the overlay, writes go to the overlay only
    /// (a value equal to the base's drops its overlay entry, so a change undone leaves nothing behind).
    /// </summary>
    public sealed class Builder : IDictionary<TKey, TValue>
    {
        private readonly Dictionary<TKey, TValue> _base;
        private readonly ImmutableDictionary<TKey, Change>.Builder _overlay;

        internal Builder(Dictionary<TKey, TValue> @base, ImmutableDictionary<TKey, Change>.Builder overlay, int count)
        {
            _base = @base;
            _overlay = overlay;
            Count = count;
        }

        public int Count { get; private set; }

        public bool IsReadOnly => false;

        public TValue this[TKey key]
        {
            get => TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"{key} is not in the table");
            set
            {
                if (!ContainsKey(key)) Count++;
                if (_base.TryGetValue(key, out var held) && EqualityComparer<TValue>.Default.Equals(held, value)) _overlay.Remove(key);
                else _overlay[key] = new Change(false, value);
            }
        }

        public ICollection<TKey> Keys => [.. Enumerate(_base, _overlay).Select(e => e.Key)];

        public ICollection<TValue> Values => [.. Enumerate(_base, _overlay).Select(e => e.Value)];

        public bool TryGetValue(TKey key, [MaybeNullWhen(false)] out TValue value) => Find(_base, _overlay, key, out value);

        public bool ContainsKey(TKey key) => TryGetValue(key, out _);

        public void Add(TKey key, TValue value)
        {
            if (ContainsKey(key)) throw new ArgumentException($"{key} is already in the table", nameof(key));
            this[key] = value;
        }

        public bool Remove(TKey key)
        {
            if (!ContainsKey(key)) return false;
            if (_base.ContainsKey(key)) _overlay[key] = new Change(true, default!);
            else _overlay.Remove(key);
            Count--;
            return true;
        }

        /// <summary>
        /// The table as it stands: the base shared with a frozen overlay, or, once the overlay holds more than the base
        /// (plus a small floor), both folded into a new base.
        /// </summary>
        public OverlayTable<TKey, TValue> ToImmutable()
        {
            if (_overlay.Count <= _base.Count + FoldFloor) return new(_base, _overlay.ToImmutable(), Count);
            var folded = new Dictionary<TKey, TValue>(Count);
            foreach (var (key, value) in Enumerate(_base, _overlay)) folded.Add(key, value);
            return Over(folded);
        }

        public void Add(KeyValuePair<TKey, TValue> item) => Add(item.Key, item.Value);

        public void Clear() => throw new NotSupportedException("an overlay table is never cleared");

        public bool Contains(KeyValuePair<TKey, TValue> item) =>
            TryGetValue(item.Key, out var value) && EqualityComparer<TValue>.Default.Equals(value, item.Value);

        public void CopyTo(KeyValuePair<TKey, TValue>[] array, int arrayIndex)
        {
            ArgumentNullException.ThrowIfNull(array);
            foreach (var entry in Enumerate(_base, _overlay)) array[arrayIndex++] = entry;
        }

        public bool Remove(KeyValuePair<TKey, TValue> item) => Contains(item) && Remove(item.Key);

        public IEnumerator<KeyValuePair<TKey, TValue>> GetEnumerator() => Enumerate(_base, _overlay).GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>Overlay entries a small base may carry before a fold (so a table of a few entries is not copied on every change).</summary>
    internal const int FoldFloor = 32;
}
