using System.Buffers;
using System.Text;

namespace ProxyPlanes.NodeTools;

/// <summary>Receives one line of a tool's output, without its '\n' (a trailing '\r' is kept); valid only during the call.</summary>
public delegate void LineHandler(ReadOnlySpan<char> line);

/// <summary>
/// A tool's output line by line, as spans: a large output (iptables-save of a 10,000-service nat table,
/// ~10 MB) is read through pooled buffers and never held as one string.
/// </summary>
public static class OutputLines
{
    // Below the large-object-heap threshold; a line longer than this grows the buffer for that read only.
    private const int BufferSize = 32 * 1024;

    /// <summary>
    /// Reads <paramref name="stream"/> to its end and hands each line, decoded from UTF-8, to <paramref name="onLine"/>;
    /// a last line without '\n' is handed over too. '\n' is never part of a multi-byte UTF-8 sequence, so cutting at it
    /// never splits a character, wherever the reads' boundaries fall.
    /// </summary>
    public static async Task ReadAsync(Stream stream, LineHandler onLine, CancellationToken cancellationToken)
    {
        var bytes = ArrayPool<byte>.Shared.Rent(BufferSize);
        var chars = ArrayPool<char>.Shared.Rent(BufferSize);
        var held = 0; // bytes of an unfinished line at the start of `bytes`
        try
        {
            while (true)
            {
                if (held == bytes.Length) Grow(ref bytes, held);
                var read = await stream.ReadAsync(bytes.AsMemory(held), cancellationToken).ConfigureAwait(false);
                if (read == 0) break;
                held = HandLines(bytes, held, held + read, ref chars, onLine);
            }
            if (held > 0) Hand(bytes.AsSpan(0, held), ref chars, onLine);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
            ArrayPool<char>.Shared.Return(chars);
        }
    }

    /// <summary>The lines of a text already read (the fakes' output), as <see cref="ReadAsync"/> hands them.</summary>
    public static void ForEach(string text, LineHandler onLine)
    {
        var rest = text.AsSpan();
        while (!rest.IsEmpty)
        {
            var end = rest.IndexOf('\n');
            if (end < 0)
            {
                onLine(rest);
                return;
            }
            onLine(rest[..end]);
            rest = rest[(end + 1)..];
        }
    }

    /// <summary>Hands every complete line of <c>bytes[..end]</c> over and moves the unfinished rest to the front; returns its length.</summary>
    private static int HandLines(byte[] bytes, int searchFrom, int end, ref char[] chars, LineHandler onLine)
    {
        var start = 0;
        var data = bytes.AsSpan(0, end);
        int newline;
        while ((newline = data[searchFrom..].IndexOf((byte)'\n')) >= 0)
        {
            Hand(data[start..(searchFrom + newline)], ref chars, onLine);
            start = searchFrom = searchFrom + newline + 1;
        }
        data[start..].CopyTo(bytes);
        return end - start;
    }

    private static void Hand(ReadOnlySpan<byte> line, ref char[] chars, LineHandler onLine)
    {
        // UTF-8 never takes fewer bytes than UTF-16 takes chars.
        if (chars.Length < line.Length)
        {
            ArrayPool<char>.Shared.Return(chars);
            chars = ArrayPool<char>.Shared.Rent(line.Length);
        }
        var count = Encoding.UTF8.GetChars(line, chars);
        onLine(chars.AsSpan(0, count));
    }

    private static void Grow(ref byte[] bytes, int used)
    {
        var bigger = ArrayPool<byte>.Shared.Rent(bytes.Length * 2);
        bytes.AsSpan(0, used).CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(bytes);
        bytes = bigger;
    }
}
