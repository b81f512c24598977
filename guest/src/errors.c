/* errors.c: turning values and exceptions into the documents the host
 * reads. Everything that reads a script's objects may run the script's
 * code (getters, toJSON, proxies): it runs under the same limits, and a
 * failure falls back to a fixed text instead of propagating. */

/* to_string_or converts v to a JS string, or returns a string of fallback
 * when the conversion throws. */
static JSValue to_string_or(JSValueConst v, const char *fallback)
{
    JSValue s = JS_ToString(ctx, v);
    if (JS_IsException(s)) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        return JS_NewString(ctx, fallback);
    }
    return s;
}

/* get_string_prop reads obj[name] as a string; undefined when absent or
 * when reading throws. */
static JSValue get_string_prop(JSValueConst obj, const char *name)
{
    JSValue v = JS_GetPropertyStr(ctx, obj, name);
    JSValue s;
    if (JS_IsException(v)) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        return JS_UNDEFINED;
    }
    if (JS_IsUndefined(v) || JS_IsNull(v))
        return JS_UNDEFINED;
    s = to_string_or(v, "");
    JS_FreeValue(ctx, v);
    return s;
}

/* set_json_result serializes doc (a value the shim built, with a null
 * prototype and string fields only) into the result. */
static int set_json_result(JSValueConst doc)
{
    JSValue json = JS_JSONStringify(ctx, doc, JS_UNDEFINED, JS_UNDEFINED);
    const char *s;
    size_t len;
    int r;
    if (JS_IsException(json)) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        return -1;
    }
    s = JS_ToCStringLen(ctx, &len, json);
    JS_FreeValue(ctx, json);
    if (!s)
        return -1;
    r = set_result(s, len);
    JS_FreeCString(ctx, s);
    return r;
}

/* error_document writes {"name","message","stack"} for a thrown value. */
static int error_document(JSValueConst ex)
{
    JSValue doc, name, msg, stack = JS_UNDEFINED;
    static const char fallback[] =
        "{\"name\":\"Error\",\"message\":\"(the error could not be read)\"}";

    if (JS_IsError(ctx, ex)) {
        name = get_string_prop(ex, "name");
        if (JS_IsUndefined(name))
            name = JS_NewString(ctx, "Error");
        msg = get_string_prop(ex, "message");
        if (JS_IsUndefined(msg))
            msg = JS_NewString(ctx, "");
        stack = get_string_prop(ex, "stack");
    } else {
        name = JS_NewString(ctx, "Error");
        msg = to_string_or(ex, "(a value that cannot be converted to a string was thrown)");
    }
    doc = JS_NewObjectProto(ctx, JS_NULL);
    if (JS_IsException(doc) || JS_IsException(name) || JS_IsException(msg)) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        JS_FreeValue(ctx, doc);
        JS_FreeValue(ctx, name);
        JS_FreeValue(ctx, msg);
        JS_FreeValue(ctx, stack);
        return set_result(fallback, sizeof(fallback) - 1);
    }
    JS_DefinePropertyValueStr(ctx, doc, "name", name, JS_PROP_C_W_E);
    JS_DefinePropertyValueStr(ctx, doc, "message", msg, JS_PROP_C_W_E);
    if (!JS_IsUndefined(stack))
        JS_DefinePropertyValueStr(ctx, doc, "stack", stack, JS_PROP_C_W_E);
    if (set_json_result(doc) < 0) {
        JS_FreeValue(ctx, doc);
        return set_result(fallback, sizeof(fallback) - 1);
    }
    JS_FreeValue(ctx, doc);
    return 0;
}

/* limit_message is the text of a runtime error status. */
static int limit_result(int status)
{
    switch (status) {
    case KAFIG_STATUS_CPU_LIMIT_EXCEEDED:
        return status_message(status, "interrupted");
    case KAFIG_STATUS_MEMORY_LIMIT_EXCEEDED:
        return status_message(status, "out of memory");
    case KAFIG_STATUS_STACK_OVERFLOW:
        return status_message(status, "stack overflow");
    }
    return status_message(KAFIG_STATUS_RUNTIME_ERROR, "internal error");
}

/* is_overflow_error: ex is what QuickJS throws when its stack check fires
 * (an InternalError whose own message is "stack overflow"), or a value
 * that cannot be an error of the script's (null: nothing could be
 * allocated). Read without running script code: own data property only. */
static int is_overflow_error(JSValueConst ex)
{
    JSPropertyDescriptor d;
    JSAtom a;
    const char *s;
    int r = 0;
    if (JS_IsNull(ex) || JS_IsUndefined(ex))
        return 1;
    if (!JS_IsError(ctx, ex))
        return 0;
    a = JS_NewAtom(ctx, "message");
    if (a == JS_ATOM_NULL) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        return 1;
    }
    switch (JS_GetOwnProperty(ctx, &d, ex, a)) {
    case 1:
        if (!(d.flags & JS_PROP_GETSET) && JS_IsString(d.value)) {
            s = JS_ToCString(ctx, d.value);
            r = s && strcmp(s, "stack overflow") == 0;
            JS_FreeCString(ctx, s);
        }
        JS_FreeValue(ctx, d.value);
        JS_FreeValue(ctx, d.getter);
        JS_FreeValue(ctx, d.setter);
        break;
    case -1:
        JS_FreeValue(ctx, JS_GetException(ctx));
        break;
    }
    JS_FreeAtom(ctx, a);
    return r;
}

/* finish_exception ends an operation that threw: classified by the shim's
 * flags first, by the thrown value only when no limit was involved. An
 * exception is a stack overflow when the stack check fired and no script
 * catch or finally block took an exception since (the parser may have
 * turned the overflow into a SyntaxError), or when it is the error QuickJS
 * threw for an overflow of this operation (rethrown, or out of a finally
 * block). A script that caught an overflow and threw something else gets
 * its own error. */
static int finish_exception(void)
{
    JSValue ex = JS_GetException(ctx);
    int r;
    if (limit_status) {
        JS_FreeValue(ctx, ex);
        return limit_result(limit_status);
    }
    if (stack_overflow_hit || (stack_overflow_seen && is_overflow_error(ex))) {
        JS_FreeValue(ctx, ex);
        return limit_result(KAFIG_STATUS_STACK_OVERFLOW);
    }
    r = error_document(ex);
    JS_FreeValue(ctx, ex);
    /* Reading the error may itself hit a limit. */
    if (limit_status)
        return limit_result(limit_status);
    if (r < 0)
        return limit_result(KAFIG_STATUS_MEMORY_LIMIT_EXCEEDED);
    return KAFIG_STATUS_JS_ERROR;
}

/* finish_rejection ends an operation whose result promise was rejected. */
static int finish_rejection(JSValue reason)
{
    JS_Throw(ctx, reason);
    return finish_exception();
}

/* finish_value ends an operation with v (consumed) as its result. */
static int finish_value(JSValue v)
{
    JSValue json;
    const char *s;
    size_t len;
    int r;

    if (limit_status) {
        JS_FreeValue(ctx, v);
        return limit_result(limit_status);
    }
    json = JS_JSONStringify(ctx, v, JS_UNDEFINED, JS_UNDEFINED);
    JS_FreeValue(ctx, v);
    if (JS_IsException(json))
        return finish_exception();
    if (limit_status) {
        JS_FreeValue(ctx, json);
        return limit_result(limit_status);
    }
    if (JS_IsUndefined(json)) {
        set_result("null", 4);
        return KAFIG_STATUS_OK;
    }
    s = JS_ToCStringLen(ctx, &len, json);
    JS_FreeValue(ctx, json);
    if (!s)
        return finish_exception();
    r = set_result(s, len);
    JS_FreeCString(ctx, s);
    if (r < 0)
        return limit_result(KAFIG_STATUS_MEMORY_LIMIT_EXCEEDED);
    return KAFIG_STATUS_OK;
}
