# bench/plot.gp: the two plots of bench/suite.py, from herold-bench's CSV files.
#
#   gnuplot -e "titles='herold mqtt'; rate_files='a-rate.csv b-rate.csv'; \
#               latency_files='a-latency.csv b-latency.csv'; out_dir='bench/results'" bench/plot.gp
#
# titles, rate_files and latency_files are space-separated lists of equal length (file names
# without spaces); the i-th title names the i-th file of each list; rate_title and
# latency_title optionally replace the plots' titles. Writes
# out_dir/w1-throughput.png (deliveries per second over time) and out_dir/latency-cdf.png
# (latency CDF, logarithmic x). Either list may be empty to skip its plot.

if (!exists("titles") || !exists("out_dir")) {
    print "bench/plot.gp: set titles, rate_files, latency_files and out_dir with -e"
    exit status 2
}
if (!exists("rate_files")) { rate_files = "" }
if (!exists("latency_files")) { latency_files = "" }
if (!exists("rate_title")) { rate_title = "W1: deliveries per second (median round)" }
if (!exists("latency_title")) {
    latency_title = "Latency at a fixed event rate, publish to delivery (median round)"
}

# pngcairo draws antialiased lines; the plain png terminal (libgd) is the fallback.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 1000,600 font "sans,11" linewidth 1.5
} else {
    set terminal png size 1000,600
}

# podo: eight colours that stay apart for colour-blind readers too (six targets).
set colorsequence podo
set datafile separator ","
set grid
set key outside right top

if (words(rate_files) > 0) {
    set output out_dir."/w1-throughput.png"
    set title rate_title
    set xlabel "seconds since the first event"
    set ylabel "deliveries/s"
    set format y "%.0s%c"
    set yrange [0:*]
    unset logscale x
    # Each row counts the deliveries of one second [s, s+1): steps, not slopes.
    plot for [i=1:words(rate_files)] word(rate_files, i) skip 1 using 1:3 \
        with steps linewidth 2 title word(titles, i)
    unset output
}

if (words(latency_files) > 0) {
    set output out_dir."/latency-cdf.png"
    set title latency_title
    set xlabel "latency (µs, logarithmic)"
    set ylabel "fraction of deliveries at or below"
    set logscale x 10
    set format x "10^{%L}"
    set format y "%.1f"
    set yrange [0:1.02]
    set key inside left top
    plot for [i=1:words(latency_files)] word(latency_files, i) skip 1 using 1:2 \
        with lines linewidth 2 title word(titles, i)
    unset output
}
